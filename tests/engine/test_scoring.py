"""Divergence and head importance, against plain full forwards of edited copies computed here."""

import threading

import numpy as np
import pytest
import torch

from models import head_scaled_copy, loaded_of
from opt_desktop.engine import HeadScale, PromptError, SettingsError
from opt_desktop.engine.running import scoring

PROMPT = "The weather today is"
OTHER = (HeadScale(layer=0, head=2, scale=0.0), HeadScale(layer=2, head=1, scale=1.5))


def _logp(model, ids, hidden=()):
    """(T, V) float64 log-probabilities of one plain full forward, positions kept where they are."""
    T = len(ids)
    mask = torch.ones(1, T, dtype=torch.long)
    mask[0, list(hidden)] = 0
    with torch.no_grad():
        logits = model(torch.tensor([ids]), attention_mask=mask, position_ids=torch.arange(T)[None],
                       use_cache=False).logits[0]
    return torch.log_softmax(logits.double(), -1)


@pytest.fixture(scope="module")
def sequence(tokenizer):
    prompt = tokenizer(PROMPT)["input_ids"]
    # Ids inside either tokenizer's vocabulary (the fallback tokenizer of a clone without fixtures has 509).
    return prompt + [500 % len(tokenizer), 77, 1200 % len(tokenizer), 9, 42, 3000 % len(tokenizer)], len(prompt)


def test_divergence_equals_kl_of_two_full_forwards(engine, sequence, monkeypatch):
    ids, _ = sequence
    monkeypatch.setattr(scoring, "_ROWS", 3)  # several vocabulary chunks, as for a long sequence
    result = engine.divergence(ids, other_mask=OTHER, other_hidden=(2,)).result()
    model = loaded_of(engine).model
    base = _logp(head_scaled_copy(model), ids)
    other = _logp(head_scaled_copy(model, OTHER), ids, hidden=(2,))
    T = len(ids)
    rows, targets = torch.arange(T - 1), torch.tensor(ids[1:])
    kl = (base.exp() * (base - other)).sum(-1)[:-1]
    for got in (result.logprob_base, result.logprob_other, result.kl):
        assert got.shape == (T,) and got.dtype == np.float32 and np.isnan(got[0])
    np.testing.assert_allclose(result.logprob_base[1:], base[rows, targets].numpy(), atol=1e-4)
    np.testing.assert_allclose(result.logprob_other[1:], other[rows, targets].numpy(), atol=1e-4)
    np.testing.assert_allclose(result.kl[1:], kl.numpy(), atol=1e-4, rtol=1e-4)
    assert kl.max() > 1e-2  # the intervention really moved the distributions


def test_divergence_of_a_run_with_itself_is_zero(engine, sequence):
    ids, _ = sequence
    result = engine.divergence(ids, base_mask=OTHER, other_mask=OTHER, base_hidden=(3,), other_hidden=(3,)).result()
    assert np.all(result.kl[1:] == 0.0)
    np.testing.assert_array_equal(result.logprob_base, result.logprob_other)


def test_divergence_refuses_what_cannot_be_scored(engine, sequence):
    ids, _ = sequence
    vocab = loaded_of(engine).info.vocab_size
    with pytest.raises(PromptError, match="outside this model's vocabulary"):
        engine.divergence([2, vocab]).result()
    with pytest.raises(SettingsError, match="Head 0:9 does not exist"):
        engine.divergence(ids, other_mask=(HeadScale(layer=0, head=9),)).result()
    with pytest.raises(SettingsError, match="Position 0"):
        engine.divergence(ids, base_hidden=(0,)).result()


@pytest.mark.parametrize("scale", [0.0, 0.5])
def test_head_importance_equals_the_loop_over_edited_copies(engine, sequence, scale):
    ids, n_prompt = sequence
    calls = []
    result = engine.head_importance(ids, n_prompt, scale=scale,
                                    progress=lambda done, total: calls.append((done, total, threading.current_thread().name))
                                    ).result()
    model = loaded_of(engine).model
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    T = len(ids)
    rows, targets = torch.arange(n_prompt - 1, T - 1), torch.tensor(ids[n_prompt:])
    baseline = _logp(head_scaled_copy(model), ids)[rows, targets]
    expected = np.zeros((L, H))
    for layer in range(L):
        for head in range(H):
            scaled = _logp(head_scaled_copy(model, (HeadScale(layer=layer, head=head, scale=scale),)), ids)[rows, targets]
            expected[layer, head] = (scaled - baseline).sum().item()
    assert result.completed and result.delta.shape == (L, H) and result.delta.dtype == np.float32
    np.testing.assert_allclose(result.delta, expected, atol=1e-3)
    assert result.baseline_logprob == pytest.approx(baseline.sum().item(), abs=1e-3)
    assert np.abs(expected).max() > 1e-2  # some head matters, so the comparison means something
    assert [(d, t) for d, t, _ in calls] == [(i + 1, L * H) for i in range(L * H)]
    assert all(name.startswith("opt-engine") for _, _, name in calls)


def test_head_importance_keeps_the_runs_own_interventions(engine, sequence):
    """A run made with a head mask and hidden tokens is measured as it was made: the baseline has them,
    and each head's scale goes on top (replacing the base scale of that head)."""
    ids, n_prompt = sequence
    base = (HeadScale(layer=0, head=1, scale=0.0), HeadScale(layer=1, head=0, scale=1.5))
    result = engine.head_importance(ids, n_prompt, base_mask=base, hidden=(2,)).result()
    model = loaded_of(engine).model
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    rows, targets = torch.arange(n_prompt - 1, len(ids) - 1), torch.tensor(ids[n_prompt:])
    baseline = _logp(head_scaled_copy(model, base), ids, hidden=(2,))[rows, targets]
    assert result.baseline_logprob == pytest.approx(baseline.sum().item(), abs=1e-3)
    for layer, head in [(0, 1), (1, 0), (L - 1, H - 1)]:
        mask = tuple(m for m in base if (m.layer, m.head) != (layer, head)) + (HeadScale(layer=layer, head=head),)
        scaled = _logp(head_scaled_copy(model, mask), ids, hidden=(2,))[rows, targets]
        assert result.delta[layer, head] == pytest.approx((scaled - baseline).sum().item(), abs=1e-3)
    assert result.delta[0, 1] == pytest.approx(0.0, abs=1e-4)  # already ablated in the run itself
    plain = engine.head_importance(ids, n_prompt).result()
    assert abs(plain.baseline_logprob - result.baseline_logprob) > 1e-3  # the interventions mattered


@pytest.mark.parametrize("how", ["event", "engine.stop"])
def test_head_importance_stops_between_heads(engine, sequence, how):
    ids, n_prompt = sequence
    stop = threading.Event()
    calls = []

    def progress(done, total):
        calls.append(done)
        if done == 3:
            stop.set() if how == "event" else engine.stop()

    result = engine.head_importance(ids, n_prompt, progress=progress, stop=stop if how == "event" else None).result()
    assert not result.completed
    assert calls == [1, 2, 3]  # no head after the stop
    flat = result.delta.ravel()
    assert np.isfinite(flat[:3]).all() and np.isnan(flat[3:]).all()


def test_head_importance_needs_generated_tokens(engine, sequence):
    ids, _ = sequence
    with pytest.raises(PromptError, match="needs generated tokens"):
        engine.head_importance(ids, len(ids)).result()
    with pytest.raises(SettingsError):
        engine.head_importance(ids, 3, scale=2.5).result()
