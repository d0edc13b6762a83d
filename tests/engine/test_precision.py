"""Precision modes through the real loader: each runnable mode generates with every inspection feature,
float32 stays the exact reference, int8 keeps hooks and the lens working, unrunnable modes fail in one
line, and the accuracy measured at load time is what it claims."""


import numpy as np
import pytest
import torch
from transformers import OPTForCausalLM

from opt_desktop.engine import EngineService, GenerationRequest, GenerationSettings, HeadScale, LoadRequest
from opt_desktop.engine.running import attention
from opt_desktop.engine.loading import accuracy, conversion, precision
from opt_desktop.engine.messages.errors import ModelLoadError
from opt_desktop.engine.messages.events import PromptScored, TokenGenerated
from opt_desktop.engine.messages.job_context import JobContext
from opt_desktop.engine.running.generate import run_generation
from opt_desktop.engine.running.lens import logit_lens
from opt_desktop.engine.loading.loader import load_model

PROMPT = "Hello, my dog is cute and"
N_NEW = 5
RUNNABLE = ["float32", "bfloat16"] + (["int8"] if precision.int8_engine() else [])
needs_int8 = pytest.mark.skipif(precision.int8_engine() is None, reason="no quantized CPU engine in this PyTorch")


@pytest.fixture(scope="module")
def loads(checkpoint):
    cache = {}

    def get(mode):
        if mode not in cache:
            cache[mode] = load_model(LoadRequest(source=str(checkpoint), dtype=mode, device="cpu"))
        return cache[mode]

    return get


def generate(loaded, **request):
    events = []
    request = GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=N_NEW), **request)
    finished = run_generation(loaded, request, JobContext(on_event=events.append))
    return events, finished


def plain_model(checkpoint):
    """The plain model as transformers loads it by default: SDPA attention."""
    return OPTForCausalLM.from_pretrained(checkpoint, dtype=torch.float32, attn_implementation="sdpa").eval()


@pytest.mark.parametrize("mode", RUNNABLE)
def test_each_mode_generates_with_every_statistic(loads, mode):
    loaded = loads(mode)
    info = loaded.info
    assert info.dtype == mode
    events, finished = generate(loaded)
    assert finished.n_tokens == N_NEW and finished.reason == "length"
    L, H, D = info.n_layers, info.n_heads, info.hidden_size
    prompt = next(e for e in events if isinstance(e, PromptScored)).fed
    P = prompt.count
    assert prompt.hidden["norm"].shape == (L + 1, P) and prompt.attention["entropy"].shape == (L, H, P)
    steps = [e.fed for e in events if isinstance(e, TokenGenerated) and e.fed is not None]
    assert len(steps) == N_NEW - 1
    ids = list(events[0].prompt_ids) + [e.token_id for e in events if isinstance(e, TokenGenerated)]
    for fed in [prompt] + steps:
        t = np.arange(fed.start, fed.start + fed.count)
        # NaN only where a statistic has no value by definition: no previous token at 0, no earlier copy.
        defined = {"previous": t > 0, "induction": np.array([ids[i] in ids[:max(i - 1, 0)] for i in t], bool)}
        for name, values in {**fed.hidden, **fed.attention}.items():
            assert values.shape[-1] == fed.count, name
            assert (np.isfinite(values) == defined.get(name, True)).all(), name
        assert fed.residual.shape == (L + 1, fed.count, D) and np.isfinite(fed.residual).all()
        # attention weights are a distribution over keys: entropy in [0, log k], sink in [0, 1]
        k = fed.start + fed.count
        assert (fed.attention["entropy"] >= -1e-5).all() and (fed.attention["entropy"] <= np.log(k) + 1e-4).all()
        assert ((fed.attention["sink"] >= 0) & (fed.attention["sink"] <= 1 + 1e-6)).all()
    for e in events:
        if isinstance(e, TokenGenerated):
            assert np.isfinite(e.logprob) and 0 < sum(e.top_probs) <= 1 + 1e-5


def test_float32_is_exactly_the_plain_model(loads, checkpoint):
    """A whole sequence, and so the prompt and its first token, is bit for bit the plain model's (SDPA,
    transformers' default). A decode step uses eager arithmetic, whose weights feed the statistics:
    the same sums in another order, so later tokens agree to float32 rounding."""
    loaded = loads("float32")
    plain = plain_model(checkpoint)
    ids = torch.tensor([loaded.tokenizer(PROMPT)["input_ids"]])
    with torch.inference_mode():
        assert torch.equal(loaded.model(ids).logits, plain(ids).logits)
        out = plain.generate(ids, max_new_tokens=N_NEW, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=1)
    events, finished = generate(loaded)
    assert list(finished.token_ids) == out.sequences[0, ids.shape[1]:].tolist()
    tokens = [e for e in events if isinstance(e, TokenGenerated)]
    assert len(tokens) == N_NEW
    reference = [torch.log_softmax(logits[0].float(), -1)[e.token_id].item()
                 for e, logits in zip(tokens, out.logits, strict=True)]
    assert tokens[0].logprob == reference[0]  # bit for bit
    np.testing.assert_allclose([e.logprob for e in tokens], reference, rtol=0, atol=1e-5)
    assert loaded.info.accuracy is None


@pytest.mark.parametrize("mode", RUNNABLE)
def test_lens_in_each_mode(loads, mode):
    loaded = loads(mode)
    events, _ = generate(loaded)
    tokens = [e for e in events if isinstance(e, TokenGenerated)]
    fed, nxt = tokens[1].fed, tokens[1]  # the step that fed token 0 predicted token 1
    lens = logit_lens(loaded, fed.residual[:, 0], nxt.token_id, position=fed.start)
    L1 = loaded.info.n_layers + 1
    assert lens.top_ids.shape == (L1, 5) and np.isfinite(lens.target_logprob).all()
    assert ((lens.top_probs >= 0) & (lens.top_probs <= 1)).all()
    # The last row read through the head is the model's own next-token distribution (up to the
    # float16 residual rows and, in int8, the float head the lens reads against the int8 one it ran).
    assert lens.top_ids[-1, 0] == nxt.top_ids[0]
    assert abs(lens.target_logprob[-1] - nxt.logprob) < 0.15


@needs_int8
def test_int8_quantizes_linear_layers_and_keeps_the_float_head(loads):
    model = loads("int8").model
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    layer = model.model.decoder.layers[0]
    for m in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.out_proj,
              layer.fc1, layer.fc2):
        assert isinstance(m, dynamic)
    assert isinstance(model.lm_head.int8, dynamic)
    # the lens and the prompt scoring read lm_head.weight with F.linear: still the float weight, tied
    assert model.lm_head.weight.dtype == torch.float32
    assert model.lm_head.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()


def test_bfloat16_linear_layers_use_packed_weights_where_the_cpu_has_bfloat16(loads):
    model = loads("bfloat16").model
    packed = hasattr(model.model.decoder.layers[0].fc1, "packed")
    assert packed == conversion.onednn_bf16()
    assert model.lm_head.weight.dtype == torch.bfloat16  # the lens still reads the plain, tied weight
    assert model.lm_head.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("mode", [m for m in RUNNABLE if m != "float32"])
def test_head_mask_pre_hook_takes_effect_on_a_converted_out_proj(loads, mode):
    loaded = loads(mode)
    out_proj = loaded.model.model.decoder.layers[1].self_attn.out_proj
    if mode == "int8":
        assert isinstance(out_proj, torch.ao.nn.quantized.dynamic.Linear)
    d = loaded.info.hidden_size // loaded.info.n_heads
    seen = {}

    def ablate_head_2(module, args):
        x = args[0].clone()
        x[..., 2 * d:3 * d] = 0
        return (x,)

    def record(module, args, output):
        seen["input"], seen["output"] = args[0].clone(), output.clone()

    ids = torch.tensor([loaded.tokenizer(PROMPT)["input_ids"]])
    handles = [out_proj.register_forward_pre_hook(ablate_head_2), out_proj.register_forward_hook(record)]
    try:
        with torch.inference_mode():
            masked = loaded.model(ids).logits
    finally:
        for h in handles:
            h.remove()
    assert (seen["input"][..., 2 * d:3 * d] == 0).all() and (seen["input"][..., :2 * d] != 0).any()
    with torch.inference_mode():
        assert torch.equal(seen["output"], out_proj(seen["input"]))  # the module ran on the masked input
        assert not torch.allclose(masked, loaded.model(ids).logits)
    # and through the engine's own head mask: ablating every head of layer 1 changes what comes out
    base = generate(loaded)[0]
    ablated = generate(loaded, head_mask=tuple(HeadScale(layer=1, head=h) for h in range(loaded.info.n_heads)))[0]
    row2 = lambda events: next(e for e in events if isinstance(e, PromptScored)).fed.residual[2].astype(np.float32)
    assert np.abs(row2(base) - row2(ablated)).max() > 0.01  # layer 1's output, its attention part removed


@pytest.mark.parametrize("mode", [m for m in RUNNABLE if m != "float32"])
def test_accuracy_is_measured_against_float32(loads, checkpoint, mode):
    loaded = loads(mode)
    acc = loaded.info.accuracy
    assert acc is not None and acc.mean_kl >= 0 and 0 <= acc.top1_agreement <= 1
    # An independent reference: the plain float32 model and the loaded one on the same text.
    ids = accuracy.reference_ids(loaded.tokenizer, loaded.info.bos_token_id)[:, : loaded.info.context_length]
    assert acc.n_positions == ids.shape[1]
    with torch.inference_mode():
        p = torch.log_softmax(plain_model(checkpoint)(ids).logits[0].double(), -1)
        q = torch.log_softmax(loaded.model(ids).logits[0].double(), -1)
    kl = (p.exp() * (p - q)).sum(-1).mean().item()
    agree = (p.argmax(-1) == q.argmax(-1)).double().mean().item()
    assert acc.mean_kl == pytest.approx(kl, rel=1e-3, abs=1e-6)
    assert acc.top1_agreement == pytest.approx(agree)
    assert 0 < acc.mean_kl < 0.5 and acc.top1_agreement > 0.5  # close to float32, but not identical


def test_float32_against_itself_is_exact():
    logp = torch.log_softmax(torch.randn(7, 50), -1)
    acc = accuracy.compare(logp, logp)
    assert acc.mean_kl == 0 and acc.top1_agreement == 1 and acc.n_positions == 7


def _one_line_error(**request) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_model(LoadRequest(**request))
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_float16_on_cpu_is_refused_in_one_line(checkpoint):
    assert "float16" in _one_line_error(source=str(checkpoint), dtype="float16", device="cpu")


def test_int8_without_a_quantization_backend_is_refused(checkpoint, monkeypatch):
    monkeypatch.setattr(precision, "int8_engine", lambda: None)
    message = _one_line_error(source=str(checkpoint), dtype="int8", device="cpu")
    assert "int8" in message and "quantized" in message


def test_int8_is_for_the_cpu():
    caps = precision.Capabilities(cpu_bf16=True, int8_engine="x86", cuda=True, mps=False, probed=True)
    assert "CPU only" in precision.mode_problem("int8", "cuda", caps)
    assert "CPU only" in precision.mode_problem("int8", "auto", caps)
    assert precision.mode_problem("int8", "cpu", caps) is None
    assert "one-device" in precision.mode_problem("int8", "cpu", caps, placement="spread")
    assert precision.mode_problem("float16", "cuda", caps) is None


def test_a_refused_mode_keeps_the_current_model(checkpoint, monkeypatch):
    svc = EngineService()
    try:
        info = svc.load(LoadRequest(source=str(checkpoint), device="cpu")).result()
        monkeypatch.setattr(precision, "int8_engine", lambda: None)
        with pytest.raises(ModelLoadError):
            svc.load(LoadRequest(source=str(checkpoint), dtype="int8", device="cpu")).result()
        assert svc.info == info
        request = GenerationRequest(prompt="Hi", settings=GenerationSettings(max_new_tokens=2))
        finished = svc.generate(request, lambda e: None).result()
        assert finished.n_tokens == 2
    finally:
        svc.shutdown()


def test_capabilities_without_torch_are_a_guess():
    caps = precision.capabilities(probe=False)
    assert not caps.probed and caps.cuda is None
    probed = precision.capabilities(probe=True)
    assert probed.probed and probed.int8_engine == precision.int8_engine()


@pytest.mark.parametrize("mode", RUNNABLE)
def test_growing_kv_cache_gives_the_same_logits(loads, mode, monkeypatch):
    """The engine's KV cache (views of buffers grown in place) against transformers' DynamicCache,
    across several growths of its buffers and a crop: bit for bit the same next-token logits. A
    bfloat16 model's cache holds float32 keys and values (exact widenings of its bfloat16 ones), so its
    reference is a DynamicCache that widens them before concatenating."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class WideningLayer(DynamicLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            return super().update(key_states.float(), value_states.float(), *args, **kwargs)

    def reference_cache(config):
        cache = DynamicCache(config=config)
        if mode == "bfloat16":
            cache.layers = [WideningLayer() for _ in cache.layers]
        return cache

    monkeypatch.setattr(attention, "_CACHE_BLOCK", 4)
    model = loads(mode).model
    ids = torch.tensor([loads(mode).tokenizer(PROMPT)["input_ids"]])

    def decode(cache, crop_at=None):
        out, logits = model(ids, cache=cache, use_cache=True), []
        tok = out.logits[:, -1:].argmax(-1)
        for step in range(9):
            if step == crop_at:
                cache.crop(-2)  # forget the last two positions, then go on from there
            out = model(tok, cache=cache, use_cache=True)
            tok = out.logits[:, -1:].argmax(-1)
            logits.append(out.logits[:, -1])
        return torch.cat(logits)

    with torch.inference_mode():
        for crop_at in (None, 5):
            grown, plain = attention.new_cache(model.config), reference_cache(model.config)
            assert torch.equal(decode(grown, crop_at), decode(plain, crop_at))
            assert grown.get_seq_length() == plain.get_seq_length()
    assert grown.layers[0]._buf_k.shape[-2] > grown.get_seq_length()  # it did grow in place
    assert grown.layers[0]._buf_k.dtype == torch.float32


@pytest.mark.parametrize("mode", RUNNABLE)
def test_demo_model_runs_in_each_mode(mode):
    loaded = load_model(LoadRequest(source="demo", dtype=mode, device="cpu"))
    assert (loaded.info.accuracy is None) == (mode == "float32")
    _, finished = generate(loaded)
    assert finished.n_tokens >= 1
