"""Input × gradient and integrated gradients, against Captum on plain (eager, hook-free) copies of the model."""

import threading

import numpy as np
import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients

from models import head_scaled_copy, loaded_of
from opt_desktop.engine import HeadScale, LoadRequest, SettingsError
from opt_desktop.engine.analyses import attribution
from opt_desktop.engine.analyses.attribution import attribute, gauss_legendre
from opt_desktop.engine.messages.errors import JobCancelled
from opt_desktop.engine.messages.job_context import JobContext
from opt_desktop.engine.loading.loader import load_model

PROMPT = "The weather today is sunny and the"
MASK = (HeadScale(layer=0, head=2, scale=0.0), HeadScale(layer=2, head=1, scale=1.5))


def _function(model, target, alternative=None, hidden=()):
    """What Captum sees: token embeddings (k, T, D) -> the target's log-probability (or logit difference)."""

    def f(embeds):
        k, T = embeds.shape[:2]
        mask = torch.ones(k, T, dtype=torch.long)
        mask[:, list(hidden)] = 0
        logits = model(inputs_embeds=embeds, attention_mask=mask, position_ids=torch.arange(T).expand(k, T),
                       use_cache=False).logits[:, -1].double()
        if alternative is not None:
            return logits[:, target] - logits[:, alternative]
        return torch.log_softmax(logits, -1)[:, target]

    return f


def _embeds(model, ids):
    return model.model.decoder.embed_tokens(torch.tensor([ids])).detach()


@pytest.fixture(scope="module")
def ids(tokenizer):
    return tokenizer(PROMPT)["input_ids"]


def test_gauss_legendre_is_captums_default_rule():
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_sizes, alphas = approximation_parameters("gausslegendre")
    a, w = gauss_legendre(7)
    np.testing.assert_allclose(a, alphas(7))
    np.testing.assert_allclose(w, step_sizes(7))


@pytest.mark.parametrize("method, steps", [("ixg", None), ("ig", 8), ("ig", 32)])
def test_equals_captum(engine, ids, method, steps, monkeypatch):
    monkeypatch.setattr(attribution, "_CHUNK_BYTES", 1)  # one alpha per forward: the chunks must add up
    loaded = loaded_of(engine)
    result = engine.call(lambda lm: attribute(lm, ids, method=method, steps=steps or 32)).result()
    ref = head_scaled_copy(loaded.model)
    f = _function(ref, result.target_id)
    x = _embeds(ref, ids)
    if method == "ixg":
        expected = InputXGradient(f).attribute(x.clone().requires_grad_(True))
    else:
        expected = IntegratedGradients(f).attribute(x, baselines=torch.zeros_like(x), n_steps=steps,
                                                    method="gausslegendre")
    expected = expected.sum(-1)[0].detach().numpy()
    assert result.scores.shape == (len(ids),) and result.scores.dtype == np.float32
    np.testing.assert_array_equal(result.token_ids, ids)
    np.testing.assert_allclose(result.scores, expected, atol=1e-4)
    assert np.abs(expected).max() > 1e-2  # the scores are not all about zero
    assert result.method == method and result.steps == steps
    assert result.gradient_dtype == "float32" and result.note is None


def test_target_alternative_and_interventions_equal_captum(engine, ids):
    """The logit difference to an alternative, under a head mask and a hidden position, as the run had them."""
    loaded = loaded_of(engine)
    target, alternative = 500 % loaded.info.vocab_size, 77
    result = engine.call(lambda lm: attribute(lm, ids, target, method="ig", steps=16, alternative_id=alternative,
                                              head_mask=MASK, hidden=(2,))).result()
    ref = head_scaled_copy(loaded.model, MASK)
    x = _embeds(ref, ids)
    expected = IntegratedGradients(_function(ref, target, alternative, hidden=(2,))).attribute(
        x, baselines=torch.zeros_like(x), n_steps=16, method="gausslegendre").sum(-1)[0].detach().numpy()
    np.testing.assert_allclose(result.scores, expected, atol=1e-4)
    assert result.scores[2] == 0.0  # a token hidden from attention cannot matter to the last position
    assert result.target_id == target and result.alternative_id == alternative
    plain = engine.call(lambda lm: attribute(lm, ids, target, steps=16, alternative_id=alternative)).result()
    assert np.abs(plain.scores - result.scores).max() > 1e-2  # the interventions mattered


@pytest.fixture(scope="module")
def smooth_model(tmp_path_factory, family, tokenizer):
    """The tiny model of this family with GELU for ReLU. Along the path from the zero embedding, ReLU's
    kinks make the gradient jump, and Gauss-Legendre then converges slowly (32 steps leave 15% of the
    sum missing on the tiny ReLU model, about 2% on a random opt-125m); with a smooth integrand it is
    exact to ~1e-7 at 32 steps, so completeness tests the attribution, not the quadrature."""
    from transformers import OPTForCausalLM

    from models import tiny_config

    folder = tmp_path_factory.mktemp(f"smooth-{family}")
    config = tiny_config(family, len(tokenizer) + (-len(tokenizer)) % 8)
    config.activation_function = "gelu"
    torch.manual_seed(0)
    OPTForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return load_model(LoadRequest(source=str(folder), device="cpu"))


def test_integrated_gradients_are_complete(smooth_model, ids):
    """Scores sum to f(input) - f(baseline) within 1%, both computed here by plain forwards."""
    result = attribute(smooth_model, ids)  # 32 steps
    ref = head_scaled_copy(smooth_model.model)
    f = _function(ref, result.target_id)
    x = _embeds(ref, ids)
    with torch.no_grad():
        fx, f0 = f(x).item(), f(torch.zeros_like(x)).item()
    assert abs(fx - f0) > 0.1
    assert result.scores.sum() == pytest.approx(fx - f0, rel=0.01)
    assert result.value == pytest.approx(fx, abs=1e-4) and result.baseline_value == pytest.approx(f0, abs=1e-4)
    assert abs(result.convergence_delta) < 0.01 * abs(fx - f0)


def test_default_target_is_the_greedy_token(engine, ids):
    loaded = loaded_of(engine)
    with torch.no_grad():
        logp = torch.log_softmax(head_scaled_copy(loaded.model)(torch.tensor([ids])).logits[0, -1].double(), -1)
    result = engine.call(lambda lm: attribute(lm, ids, method="ixg")).result()
    assert result.target_id == int(logp.argmax())
    assert result.logprob == pytest.approx(logp.max().item(), abs=1e-4)
    assert all(p.requires_grad for p in loaded.model.parameters())  # the frozen weights were given back


@pytest.fixture(scope="module")
def float32_scores(checkpoint, ids):
    loaded = load_model(LoadRequest(source=str(checkpoint), device="cpu"))
    return attribute(loaded, ids, 500, steps=16)


@pytest.mark.parametrize("dtype", ["int8", "bfloat16"])
def test_modes_without_cpu_gradients_use_a_float32_copy(checkpoint, ids, dtype, float32_scores):
    loaded = load_model(LoadRequest(source=str(checkpoint), device="cpu", dtype=dtype))
    result = attribute(loaded, ids, 500, steps=16)
    assert result.gradient_dtype == "float32" and dtype in result.note and "float32" in result.note
    # The copy holds the mode's own weight values: close to the float32 model, not equal to it.
    assert 0 < np.abs(result.scores - float32_scores.scores).max()
    assert np.corrcoef(result.scores, float32_scores.scores)[0, 1] > 0.9
    with torch.inference_mode():  # logprob is the mode's own, read by the model itself as generate reads it
        # (the last row alone: int8 quantises the head's input per call, so other rows would change it)
        logits = loaded.model(torch.tensor([ids]), logits_to_keep=1).logits[0, -1]
        own = torch.log_softmax(logits.float(), -1)[500].item()
    assert result.logprob == pytest.approx(own, abs=1e-5)


def test_packed_bfloat16_weights_are_read_back_exactly(checkpoint):
    from opt_desktop.engine.loading import conversion
    from opt_desktop.engine.analyses.grad_model import float32_copy

    if not conversion.onednn_bf16():
        pytest.skip("this CPU has no oneDNN bfloat16 kernels, so the app never packs bfloat16 weights here")
    loaded = load_model(LoadRequest(source=str(checkpoint), device="cpu", dtype="bfloat16"))
    plain = load_model(LoadRequest(source=str(checkpoint), device="cpu")).model.to(torch.bfloat16)
    twin = float32_copy(loaded.model)
    for name, p in twin.named_parameters():
        np.testing.assert_array_equal(p.detach().numpy(), plain.get_parameter(name).detach().float().numpy())


@pytest.mark.parametrize("method", ["ig", "ixg"])
def test_stop_ends_the_job_between_chunks(engine, ids, monkeypatch, method):
    monkeypatch.setattr(attribution, "_CHUNK_BYTES", 1)  # one alpha per forward
    loaded = loaded_of(engine)
    forwards = []
    handle = loaded.model.model.decoder.layers[-1].register_forward_hook(lambda *a: forwards.append(1))
    stop = threading.Event()
    calls = []

    def progress(p):
        calls.append((p.done, p.total))
        stop.set()

    try:
        if method == "ig":
            with pytest.raises(JobCancelled):
                engine.call(lambda lm: attribute(lm, ids, steps=32, job=JobContext(stop=stop, on_event=progress))).result()
            # the model's own forward, f(input) and f(baseline) in one batch, then a single chunk
            assert calls == [(1, 32)] and len(forwards) == 3
        stop.set()
        forwards.clear()
        with pytest.raises(JobCancelled):
            engine.call(lambda lm: attribute(lm, ids, method=method, job=JobContext(stop=stop))).result()
        assert forwards == []  # a job stopped before it starts runs no forward at all
    finally:
        handle.remove()


def test_refusals(engine, ids):
    vocab = loaded_of(engine).info.vocab_size
    cases = [
        (dict(method="shap"), "Unknown attribution method"),
        (dict(steps=0), "1 to 512 steps"),
        (dict(target_id=vocab), "outside this model's vocabulary"),
        (dict(target_id=5, alternative_id=5), "must differ"),
        (dict(hidden=(0,)), "Position 0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(SettingsError, match=message):
            engine.call(lambda lm: attribute(lm, ids, **kwargs)).result()


def test_a_float32_copy_that_does_not_fit_is_refused_in_one_line(checkpoint, ids, monkeypatch):
    from opt_desktop.engine import EngineError
    from opt_desktop.engine.analyses import grad_model

    loaded = load_model(LoadRequest(source=str(checkpoint), device="cpu", dtype="int8"))
    monkeypatch.setattr(grad_model, "available_memory", lambda: 0)  # even a tiny test model's copy does not fit
    with pytest.raises(EngineError, match=r"needs a float32 copy of the int8 model for its gradients \(\d+(\.\d)? [KM]iB\), and only 0 B of memory is free"):
        attribute(loaded, ids, method="ixg")
