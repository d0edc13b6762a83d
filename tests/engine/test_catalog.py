"""The catalog's sizes against models transformers builds (on the meta device, nothing allocated)."""

import json
import subprocess
import sys

import pytest
import torch

from models import OPT_CONFIGS
from opt_desktop.engine.loading.catalog import CATALOG, DEMO, OFFICIAL, find, fit, from_config, machine_memory

pytestmark = pytest.mark.filterwarnings("ignore")


def meta_model(config, dtype=torch.float32):
    from transformers import OPTForCausalLM

    with torch.device("meta"):
        return OPTForCausalLM(config).to(dtype)


def real_config(name):
    from transformers import OPTConfig

    path = OPT_CONFIGS / name / "config.json"
    if not path.is_file():
        pytest.skip("the shared OPT configs are not here")
    return OPTConfig(**json.loads(path.read_text()))


def catalog_config(c):
    from transformers import OPTConfig

    return OPTConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.n_layers,
                     ffn_dim=c.ffn_dim, num_attention_heads=c.n_heads, max_position_embeddings=c.context_length,
                     word_embed_proj_dim=c.embed_dim, do_layer_norm_before=c.pre_layer_norm)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())  # tied lm_head counted once, like the catalog


def test_lists_the_eight_official_checkpoints_and_the_demo():
    assert [c.source for c in OFFICIAL] == [f"facebook/opt-{s}" for s in
                                            ("125m", "350m", "1.3b", "2.7b", "6.7b", "13b", "30b", "66b")]
    assert CATALOG[-1] is DEMO and DEMO.built_in and not DEMO.random_weights
    assert "tiny model trained on Python's documentation (not OPT weights)" in DEMO.label
    assert find("facebook/opt-350m") is OFFICIAL[1] and find("nope") is None


@pytest.mark.parametrize("name", ["opt-125m", "opt-350m"])
def test_architecture_matches_the_real_config(name):
    cfg = real_config(name)
    c = find(f"facebook/{name}")
    assert (c.n_layers, c.n_heads, c.hidden_size, c.ffn_dim, c.vocab_size, c.context_length, c.embed_dim,
            c.pre_layer_norm) == (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size, cfg.ffn_dim,
                                  cfg.vocab_size, cfg.max_position_embeddings, cfg.word_embed_proj_dim,
                                  cfg.do_layer_norm_before)
    assert c.n_params == n_params(meta_model(cfg))


@pytest.mark.parametrize("c", OFFICIAL, ids=lambda c: c.source)
def test_parameter_count_is_what_transformers_builds(c):
    assert c.n_params == n_params(meta_model(catalog_config(c)))
    # ...and rounds to the size in the model's name (OPT paper, table 1)
    size = c.source.rsplit("-", 1)[1]
    nominal = float(size[:-1]) * (1e9 if size.endswith("b") else 1e6)
    assert abs(c.n_params - nominal) / nominal < 0.06


def test_known_parameter_counts():
    assert find("facebook/opt-125m").n_params == 125_239_296
    assert find("facebook/opt-350m").n_params == 331_196_416


@pytest.mark.parametrize("name", ["opt-125m", "opt-350m"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_weight_memory_matches_a_model_in_that_dtype(name, dtype):
    model = meta_model(real_config(name), getattr(torch, dtype))
    expected = sum(p.numel() * p.element_size() for p in model.parameters())
    expected += sum(b.numel() * b.element_size() for b in model.buffers())
    assert find(f"facebook/{name}").weights_bytes(dtype) == expected


@pytest.mark.parametrize("name", ["opt-125m", "opt-350m"])
def test_int8_memory_counts_linear_weights_as_bytes(name):
    """Dynamic int8: every nn.Linear weight one byte (lm_head becomes its own int8 copy), the rest float32."""
    model = meta_model(real_config(name))
    linear = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not model.lm_head}
    assert id(model.lm_head.weight) not in linear  # it is the embedding's weight (tied)
    expected = sum(p.numel() * (1 if id(p) in linear else 4) for p in model.parameters())
    expected += model.lm_head.weight.numel()  # tied: the embedding stays float32, lm_head adds int8
    rows = sum(m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    expected += 16 * rows  # a float64 scale and an int64 zero point per output row
    assert find(f"facebook/{name}").weights_bytes("int8") == expected


@pytest.mark.parametrize("pre", [True, False], ids=["pre-LN", "post-LN"])
def test_int8_memory_matches_the_int8_mode(pre):
    """Against a model really converted by the engine's int8 mode (per-row scales on x86)."""
    from transformers import OPTConfig, OPTForCausalLM

    from opt_desktop.engine.loading import conversion, precision

    if precision.int8_engine() != "x86":
        pytest.skip("per-row int8 scales are what the x86 engine uses")
    cfg = OPTConfig(vocab_size=1000, hidden_size=256, num_hidden_layers=2, ffn_dim=1024, num_attention_heads=4,
                    max_position_embeddings=128, word_embed_proj_dim=256 if pre else 128, do_layer_norm_before=pre)
    torch.manual_seed(0)
    model = conversion.convert(OPTForCausalLM(cfg).eval(), "int8")
    assert from_config(cfg.to_dict(), "tiny").weights_bytes("int8") == conversion.footprint(model)


@pytest.mark.parametrize("name", ["opt-125m", "opt-350m"])
def test_a_local_config_reads_like_the_catalog(name):
    cfg = real_config(name)
    c = from_config(cfg.to_dict(), source="/some/folder")
    assert c.n_params == find(f"facebook/{name}").n_params
    assert c.weights_bytes("int8") == find(f"facebook/{name}").weights_bytes("int8")


def _shipped_demo():
    from transformers import OPTForCausalLM

    from opt_desktop.engine.loading.demo import demo_folder

    return OPTForCausalLM.from_pretrained(demo_folder(), dtype=torch.float32)


def test_kv_cache_estimate_matches_a_real_cache():
    model = _shipped_demo()
    tokens = 12
    with torch.no_grad():
        out = model(torch.randint(4, 100, (1, tokens)), use_cache=True)
    cache = out.past_key_values
    measured = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    assert DEMO.kv_cache_bytes("float32", tokens) == measured
    assert DEMO.memory_bytes("float16") == DEMO.weights_bytes("float16") + DEMO.kv_cache_bytes("float16")


def test_demo_entry_describes_the_demo_model():
    model = _shipped_demo()
    cfg = model.config
    assert (DEMO.n_layers, DEMO.n_heads, DEMO.hidden_size, DEMO.vocab_size, DEMO.context_length) == (
        cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size, cfg.vocab_size, cfg.max_position_embeddings)
    assert DEMO.n_params == n_params(model)


def test_sizes_grow_and_66b_needs_about_132_gb_in_float16():
    sizes = [c.n_params for c in OFFICIAL]
    assert sizes == sorted(sizes)
    opt66 = find("facebook/opt-66b")
    assert 130e9 < opt66.weights_bytes("float16") < 133e9
    assert opt66.download_bytes == opt66.weights_bytes("float16")
    assert opt66.weights_bytes("int8") < opt66.weights_bytes("float16") < opt66.weights_bytes("float32")


def test_fit():
    gib = 2**30
    assert fit(gib, 16 * gib) == "fits"
    assert fit(15 * gib, 16 * gib) == "tight"
    assert fit(17 * gib, 16 * gib) == "too-big"
    assert fit(1, 0) == "too-big"


def test_machine_memory_reports_ram():
    m = machine_memory(include_gpus=False)
    assert m.ram_total > 2**28 and 0 < m.ram_available <= m.ram_total and m.gpus == ()


def test_gpu_memory_does_not_import_torch():
    """The dialog may ask before the engine has loaded torch: it must not pay for the import."""
    code = "import sys; from opt_desktop.engine.loading.catalog import gpu_memory; print(gpu_memory(), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "() False", out.stderr


def test_bfloat16_cache_on_a_cpu_is_float32(checkpoint):
    """The engine keeps a CPU bfloat16 model's KV cache in float32 (faster there): the estimate follows."""
    import torch

    from opt_desktop.engine.running.attention import new_cache
    from opt_desktop.engine.loading.loader import load_model
    from opt_desktop.engine.messages.settings import LoadRequest

    loaded = load_model(LoadRequest(source=str(checkpoint), dtype="bfloat16", device="cpu"))
    cache = new_cache(loaded.model.config)
    ids = torch.tensor([[2, 5, 6, 7]])
    with torch.inference_mode():
        loaded.model(ids, cache=cache, use_cache=True)
    assert cache.layers[0].keys.dtype == torch.float32
    c = DEMO
    assert c.kv_cache_bytes("bfloat16", 10, on_cpu=True) == 2 * c.kv_cache_bytes("bfloat16", 10)
    assert c.kv_cache_bytes("bfloat16", 10, on_cpu=True) == c.kv_cache_bytes("float32", 10)
