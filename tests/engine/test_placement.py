"""Spreading a checkpoint over devices: accelerate's placement, read back and summarised; a model
offloaded to RAM and disk generates exactly what the one-device model does, statistics included."""

import json

import numpy as np
import pytest
import torch

from models import OPT_CONFIGS
from opt_desktop.engine import GenerationRequest, GenerationSettings, InspectSettings, LoadRequest, SettingsError
from opt_desktop.engine.loading.catalog import find
from opt_desktop.engine.messages.events import PromptScored, TokenGenerated
from opt_desktop.engine.messages.job_context import JobContext
from opt_desktop.engine.loading.placement import (
    accelerate_max_memory,
    condense,
    format_max_memory,
    parse_max_memory,
    placement_summary,
)

pytestmark = pytest.mark.filterwarnings("ignore")


# --- reading accelerate's device map ------------------------------------------------------------

def test_condense_merges_consecutive_layers_per_device():
    device_map = {"model.decoder.embed_tokens": 0, "lm_head": 0, "model.decoder.embed_positions": 0,
                  "model.decoder.final_layer_norm": "disk",
                  **{f"model.decoder.layers.{i}": 0 for i in range(6)},
                  **{f"model.decoder.layers.{i}": "cpu" for i in range(6, 10)},
                  **{f"model.decoder.layers.{i}": "disk" for i in range(10, 12)}}
    assert condense(device_map, 12) == (
        ("embed_tokens", "cuda:0"), ("embed_positions", "cuda:0"), ("layers 0-5", "cuda:0"),
        ("layers 6-9", "cpu"), ("layers 10-11", "disk"), ("final_layer_norm", "disk"), ("lm_head", "cuda:0"))


def test_condense_whole_blocks_and_single_layers():
    assert condense({"model.decoder.embed_tokens": "cpu", "model.decoder.layers": "disk", "lm_head": "cpu"}, 24) == (
        ("embed_tokens", "cpu"), ("layers 0-23", "disk"), ("lm_head", "cpu"))
    assert condense({"": "disk"}, 3) == (("whole model", "disk"),)
    assert condense({"model.decoder.layers.0": 1, "model.decoder.layers.1": "cpu", "model.decoder.layers.2": 1},
                    3) == (("layer 0", "cuda:1"), ("layer 1", "cpu"), ("layer 2", "cuda:1"))


def test_placement_summary_groups_neighbours_on_one_device():
    from opt_desktop.engine.messages.events import ModelInfo

    info = ModelInfo(source="x", label="x", n_layers=12, n_heads=12, hidden_size=768, word_embed_proj_dim=768,
                     ffn_dim=3072, vocab_size=50272, context_length=2048, n_params=1, dtype="float16",
                     device="cuda", memory_bytes=1, pre_layer_norm=True,
                     placement=(("embed_tokens", "cuda:0"), ("layers 0-5", "cuda:0"), ("layers 6-11", "cpu"),
                                ("final_layer_norm", "disk"), ("lm_head", "disk")))
    assert placement_summary(info) == "embed_tokens, layers 0-5: cuda:0 · layers 6-11: cpu · final_layer_norm, lm_head: disk"
    assert placement_summary(None) == "" and placement_summary(info.__class__(**{**info.__dict__, "placement": ()})) == ""


# --- max memory -----------------------------------------------------------------------------------

def test_parse_max_memory():
    assert parse_max_memory("0=20GiB, cuda:1 = 10 gb; cpu=30GiB, mps=1000") == {"0": "20GiB", "1": "10GB", "cpu": "30GiB", "mps": "1000"}
    assert parse_max_memory("  ") is None
    assert format_max_memory(parse_max_memory("0=20GiB,cpu=30GiB")) == "0=20GiB, cpu=30GiB"


@pytest.mark.parametrize("text, fragment", [("gpu=3GiB", "not a device"), ("0=lots", "not a size"),
                                            ("cpu", "device=size")])
def test_bad_max_memory_is_one_clear_line(text, fragment):
    with pytest.raises(SettingsError, match=fragment) as info:
        parse_max_memory(text)
    assert "\n" not in str(info.value)


def test_accelerate_max_memory_keeps_the_devices_the_choice_allows():
    assert accelerate_max_memory({"0": "20GiB", "cpu": "30GiB"}, "cuda") == {0: "20GiB", "cpu": "30GiB"}
    assert accelerate_max_memory({"0": "20GiB", "cpu": "30GiB"}, "cpu") == {"cpu": "30GiB"}
    assert accelerate_max_memory({"cpu": "123456"}, "cpu") == {"cpu": 123456}  # bytes
    assert set(accelerate_max_memory({"0": "20GiB"}, "cuda")) == {0, "cpu"}  # RAM comes before the disk
    assert set(accelerate_max_memory(None, "cpu")) == {"cpu"}
    assert accelerate_max_memory(None, "cuda") is None  # accelerate uses every GPU and the RAM


# --- config-sized placement (nothing allocated) ---------------------------------------------------

@pytest.mark.parametrize("name", ["opt-125m", "opt-350m"])
def test_real_sized_model_spreads_over_gpu_ram_and_disk(name):
    from accelerate import infer_auto_device_map, init_empty_weights
    from accelerate.utils import compute_module_sizes
    from transformers import OPTConfig, OPTForCausalLM

    path = OPT_CONFIGS / name / "config.json"
    if not path.is_file():
        pytest.skip("the shared OPT configs are not here")
    cfg = OPTConfig(**json.loads(path.read_text()))
    with init_empty_weights():
        model = OPTForCausalLM(cfg).to(torch.float16)
    model.tie_weights()
    total = compute_module_sizes(model)[""]
    assert total == find(f"facebook/{name}").weights_bytes("float16")  # the manager's estimate

    # The GPU (absent here: accelerate only warns) takes the tied embeddings and a few layers, RAM some more.
    max_memory = accelerate_max_memory({"0": str(total // 2), "cpu": str(total // 4)}, "cuda")
    device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=model._no_split_modules)
    placement = condense(device_map, cfg.num_hidden_layers)
    devices = [dev for _, dev in placement]
    assert {"cuda:0", "cpu", "disk"} <= set(devices)
    layers = []
    for part, dev in placement:
        if part.startswith("layer"):
            bounds = part.split(" ", 1)[1].split("-")
            layers += range(int(bounds[0]), int(bounds[-1]) + 1)
    assert layers == list(range(cfg.num_hidden_layers))  # each layer once, in order
    order = {"cuda:0": 0, "cpu": 1, "disk": 2}
    layer_devices = [order[dev] for part, dev in placement if part.startswith("layer")]
    assert layer_devices == sorted(layer_devices)  # GPU first, then RAM, then disk


# --- a tiny checkpoint really offloaded to RAM and disk -------------------------------------------

def _offload_budget(checkpoint) -> str:
    """RAM for everything but the layers plus about two of them: accelerate then keeps layer 0 in RAM
    and puts the others on disk (it reserves room to bring the largest offloaded layer in)."""
    from accelerate import init_empty_weights
    from accelerate.utils import compute_module_sizes
    from transformers import OPTConfig, OPTForCausalLM

    cfg = OPTConfig.from_pretrained(checkpoint)
    with init_empty_weights():
        model = OPTForCausalLM(cfg)
    model.tie_weights()
    sizes = compute_module_sizes(model)
    layers = [sizes[f"model.decoder.layers.{i}"] for i in range(cfg.num_hidden_layers)]
    return str(int(sizes[""] - sum(layers) + 2.5 * max(layers)))


def _load(request):
    """What engine.loader.load_model does for a folder, with the request's placement."""
    from opt_desktop.engine.running.attention import register
    from opt_desktop.engine.running.loaded import LoadedModel
    from opt_desktop.engine.loading.loader import _load_tokenizer, _load_weights, _model_info, locate

    folder = locate(request)
    model = _load_weights(request.source, folder, torch.float32, "cpu", request)
    if not getattr(model, "hf_device_map", None):
        model.to("cpu")
    model.eval()
    model.set_attn_implementation(register())
    return LoadedModel(model=model, tokenizer=_load_tokenizer(request.source, folder),
                       info=_model_info(request.source, model, "float32", "cpu"), device=torch.device("cpu"))


@pytest.fixture(scope="module")
def offloaded(checkpoint, tmp_path_factory):
    offload = tmp_path_factory.mktemp("offload")
    request = LoadRequest(source=str(checkpoint), device="cpu", placement="spread",
                          max_memory={"cpu": _offload_budget(checkpoint)}, offload_folder=str(offload))
    return _load(request)


def test_spread_places_layers_in_ram_and_on_disk(offloaded, checkpoint):
    placement = dict(offloaded.info.placement)
    assert placement["layer 0"] == "cpu" and placement["layers 1-2"] == "disk"
    assert placement["embed_tokens"] == "cpu" and placement["lm_head"] == "cpu"
    assert "layer 0: cpu" in placement_summary(offloaded.info) and "layers 1-2: disk" in placement_summary(offloaded.info)
    assert offloaded.info.n_params == sum(p.numel() for p in offloaded.model.parameters())


def test_one_device_load_has_no_placement(checkpoint):
    loaded = _load(LoadRequest(source=str(checkpoint), device="cpu"))
    assert loaded.info.placement == () and placement_summary(loaded.info) == ""


def _events(loaded, request):
    from opt_desktop.engine.running.generate import run_generation

    events = []
    finished = run_generation(loaded, request, JobContext(on_event=events.append))
    return events, finished


def test_offloaded_model_generates_the_same_tokens_and_statistics(offloaded, checkpoint):
    reference = _load(LoadRequest(source=str(checkpoint), device="cpu"))
    request = GenerationRequest(prompt="The weather today is", settings=GenerationSettings(max_new_tokens=6),
                                inspect=InspectSettings(keep_attention_rows=True))
    ref_events, ref_finished = _events(reference, request)
    off_events, off_finished = _events(offloaded, request)
    assert off_finished.token_ids == ref_finished.token_ids and off_finished.n_tokens == 6

    def steps(events):
        return [e.fed for e in events if isinstance(e, (PromptScored, TokenGenerated)) and e.fed is not None]

    ref_steps, off_steps = steps(ref_events), steps(off_events)
    assert len(ref_steps) == len(off_steps) >= 5
    for a, b in zip(ref_steps, off_steps):
        assert a.start == b.start and a.hidden and a.attention  # statistics to compare, not empty dicts
        for name in a.hidden:
            np.testing.assert_allclose(b.hidden[name], a.hidden[name], rtol=1e-5, atol=1e-5)
        for name in a.attention:
            np.testing.assert_allclose(b.attention[name], a.attention[name], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(b.residual.astype(np.float32), a.residual.astype(np.float32), atol=1e-3)
        for ra, rb in zip(a.attention_rows, b.attention_rows):
            np.testing.assert_allclose(rb.astype(np.float32), ra.astype(np.float32), atol=1e-3)
    ref_scores = next(e for e in ref_events if isinstance(e, PromptScored))
    off_scores = next(e for e in off_events if isinstance(e, PromptScored))
    np.testing.assert_allclose(off_scores.logprob, ref_scores.logprob, rtol=1e-5, atol=1e-5)


def test_logit_lens_reads_an_offloaded_model(offloaded, checkpoint):
    from opt_desktop.engine.running.lens import logit_lens

    reference = _load(LoadRequest(source=str(checkpoint), device="cpu"))
    request = GenerationRequest(prompt="Hello", settings=GenerationSettings(max_new_tokens=3))
    events, _ = _events(reference, request)
    rows = next(e for e in events if isinstance(e, TokenGenerated) and e.fed is not None).fed.residual[:, 0]
    a = logit_lens(reference, rows, target_id=5)
    b = logit_lens(offloaded, rows, target_id=5)
    np.testing.assert_array_equal(a.top_ids, b.top_ids)
    np.testing.assert_allclose(a.top_probs, b.top_probs, rtol=1e-5)


def test_bad_offload_folder_is_a_load_error(checkpoint, tmp_path):
    from opt_desktop.engine import ModelLoadError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ModelLoadError, match="offload folder") as info:
        _load(LoadRequest(source=str(checkpoint), device="cpu", placement="spread",
                          offload_folder=str(blocker / "sub")))
    assert "\n" not in str(info.value)
