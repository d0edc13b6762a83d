"""Activation patching, against a hand-written hook loop: one plain full forward per patch."""

import copy
import threading

import numpy as np
import pytest
import torch

from opt_desktop.engine import HeadScale, LoadRequest, PromptError
from opt_desktop.engine.analyses import patching
from opt_desktop.engine.messages.errors import JobCancelled
from opt_desktop.engine.messages.job_context import JobContext
from opt_desktop.engine.loading.loader import load_model
from opt_desktop.engine.analyses.patching import patch
from opt_desktop.engine.messages.results import Patching

MASK = (HeadScale(layer=1, head=3, scale=0.0), HeadScale(layer=2, head=0, scale=1.5))


def _loaded(engine):
    return engine.call(lambda loaded: loaded).result()


def _output(o):
    return o[0] if isinstance(o, tuple) else o


def reference(model, clean, corrupt, target, mask=(), hidden=()):
    """(clean p, corrupt p, (L+1, T) residual map, (L, H) head map), one eager forward per patch, no engine code.

    Head masks are applied by scaling out_proj's weight columns (hook-free), hidden positions by the
    attention mask with positions kept, patches by hooks written here."""
    ref = copy.deepcopy(model)
    ref.set_attn_implementation("eager")
    L, H = ref.config.num_hidden_layers, ref.config.num_attention_heads
    d = ref.config.hidden_size // H
    with torch.no_grad():
        for m in mask:
            ref.model.decoder.layers[m.layer].self_attn.out_proj.weight[:, m.head * d:(m.head + 1) * d] *= m.scale
    layers = ref.model.decoder.layers
    T = len(clean)
    attn = torch.ones(1, T, dtype=torch.long)
    attn[0, list(hidden)] = 0

    def run(ids, hooks=()):
        handles = [mod.register_forward_pre_hook(fn) if pre else mod.register_forward_hook(fn) for mod, fn, pre in hooks]
        try:
            with torch.no_grad():
                # the last row only, as generate reads it (int8 quantises the head's input per call)
                logits = ref(torch.tensor([ids]), attention_mask=attn, position_ids=torch.arange(T)[None],
                             use_cache=False, logits_to_keep=1).logits[0, -1]
        finally:
            for h in handles:
                h.remove()
        return torch.softmax(logits.double(), -1)[target].item()

    rows, heads = {}, {}
    record = [(layers[0], lambda mod, a: rows.__setitem__(0, a[0][0].clone()), True)]
    for i in range(L):
        record.append((layers[i], lambda mod, a, o, i=i: rows.__setitem__(i + 1, _output(o)[0].clone()), False))
        record.append((layers[i].self_attn.out_proj, lambda mod, a, i=i: heads.__setitem__(i, a[0][0].clone()), True))
    p_clean, p_corrupt = run(clean, record), run(corrupt)

    def put(x, r, t):
        x = x.clone()
        x[0, t] = rows[r][t]
        return x

    prob = np.zeros((L + 1, T))
    for r in range(L + 1):
        for t in range(T):
            if r == 0:
                hook = (layers[0], lambda mod, a, t=t: (put(a[0], 0, t),) + a[1:], True)
            else:
                hook = (layers[r - 1], lambda mod, a, o, r=r, t=t: put(_output(o), r, t) if not isinstance(o, tuple)
                        else (put(o[0], r, t),) + o[1:], False)
            prob[r, t] = run(corrupt, [hook])
    head_prob = np.zeros((L, H))
    for l in range(L):
        for h in range(H):
            def swap(mod, a, l=l, h=h):
                x = a[0].clone()
                x[..., h * d:(h + 1) * d] = heads[l][..., h * d:(h + 1) * d]
                return (x,) + a[1:]

            head_prob[l, h] = run(corrupt, [(layers[l].self_attn.out_proj, swap, True)])
    return p_clean, p_corrupt, prob, head_prob


@pytest.fixture(scope="module")
def prompts(tokenizer):
    """A clean and a corrupted prompt of the same token length that differ in the middle."""
    pairs = [("The Eiffel Tower is in the city of", "The Colosseum is in the city of"),
             ("The cat sat on the mat and then", "The dog sat on the mat and then"),
             ("Paris is the capital of", "Rome is the capital of")]
    for clean, corrupt in pairs:
        a, b = tokenizer(clean)["input_ids"], tokenizer(corrupt)["input_ids"]
        if len(a) == len(b) and a != b:
            return a, b
    a = tokenizer(pairs[1][0])["input_ids"]
    return a, a[:2] + [(a[2] + 7) % len(tokenizer)] + a[3:]  # a tokenizer where no pair lines up


def _greedy(model, ids):
    with torch.no_grad():
        return int(model(torch.tensor([ids])).logits[0, -1].argmax())


@pytest.mark.parametrize("batch_tokens", [patching._BATCH_TOKENS, 1, 25])
def test_equals_one_forward_per_patch(engine, prompts, batch_tokens, monkeypatch):
    """Several patches per forward (all of a row's, one, or a few), each starting at its own layer."""
    monkeypatch.setattr(patching, "_BATCH_TOKENS", batch_tokens)
    clean, corrupt = prompts
    model = _loaded(engine).model
    target = _greedy(model, clean)
    result = engine.call(lambda lm: patch(lm, clean, corrupt, target)).result()
    p_clean, p_corrupt, prob, head_prob = reference(model, clean, corrupt, target)
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    assert result.prob.shape == (L + 1, len(clean)) and result.head_prob.shape == (L, H)
    assert result.prob.dtype == result.head_prob.dtype == np.float32
    assert result.clean_prob == pytest.approx(p_clean, rel=1e-4)
    assert result.corrupt_prob == pytest.approx(p_corrupt, rel=1e-4)
    np.testing.assert_allclose(result.prob, prob, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(result.head_prob, head_prob, rtol=1e-4, atol=1e-7)
    assert abs(p_clean - p_corrupt) > 1e-3 * p_clean  # the two prompts differ, so the maps mean something
    assert np.ptp(result.prob) > 0.1 * abs(p_clean - p_corrupt) and np.ptp(result.head_prob) > 0
    assert result.row_labels == ("embed",) + tuple(str(i) for i in range(L))


def test_keeps_the_interventions(engine, prompts):
    clean, corrupt = prompts
    model = _loaded(engine).model
    target = _greedy(model, clean)
    result = engine.call(lambda lm: patch(lm, clean, corrupt, target, head_mask=MASK, hidden=(3,))).result()
    p_clean, p_corrupt, prob, head_prob = reference(model, clean, corrupt, target, MASK, hidden=(3,))
    assert result.clean_prob == pytest.approx(p_clean, rel=1e-4)
    np.testing.assert_allclose(result.prob, prob, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(result.head_prob, head_prob, rtol=1e-4, atol=1e-7)
    plain = engine.call(lambda lm: patch(lm, clean, corrupt, target, heads=False)).result()
    assert plain.head_prob.shape == (0, 0)
    assert abs(plain.clean_prob - result.clean_prob) > 1e-3 * plain.clean_prob  # the interventions mattered


def test_normalisation_endpoints(engine, prompts):
    clean, corrupt = prompts
    model = _loaded(engine).model
    result = engine.call(lambda lm: patch(lm, clean, corrupt, _greedy(model, clean))).result()
    norm = result.prob_normalised
    T = len(clean)
    # The last row at the last position is the clean run's final state; elsewhere in that row nothing reads it.
    assert norm[-1, -1] == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(norm[-1, :-1], 0.0, atol=1e-4)
    same = [t for t in range(T) if clean[t] == corrupt[t]]  # the leading </s> at least
    assert 0 in same
    np.testing.assert_allclose(norm[0, same], 0.0, atol=1e-4)  # copying an identical embedding changes nothing
    assert result.normalised(np.array([result.corrupt_prob, result.clean_prob])) == pytest.approx([0.0, 1.0])
    np.testing.assert_allclose(result.head_prob_normalised,
                               (result.head_prob - result.corrupt_prob) / (result.clean_prob - result.corrupt_prob),
                               rtol=1e-5)
    flat = Patching(clean_ids=np.array(clean), corrupt_ids=np.array(clean), target_id=0, clean_prob=0.25,
                    corrupt_prob=0.25, prob=np.full((2, T), 0.25, np.float32), head_prob=np.zeros((1, 1), np.float32))
    assert np.isnan(flat.prob_normalised).all()  # nothing to restore: no scale to show


def test_stop_ends_the_job_between_batches(engine, prompts, monkeypatch):
    monkeypatch.setattr(patching, "_BATCH_TOKENS", 1)  # one patch per forward
    clean, corrupt = prompts
    model = _loaded(engine).model
    forwards = []
    handle = model.model.decoder.layers[-1].register_forward_hook(lambda *a: forwards.append(1))
    stop = threading.Event()
    calls = []

    def progress(p):
        calls.append((p.done, p.total))
        if p.done == 3:
            stop.set()

    L, H, T = model.config.num_hidden_layers, model.config.num_attention_heads, len(clean)
    try:
        with pytest.raises(JobCancelled):
            engine.call(lambda lm: patch(lm, clean, corrupt, 5, job=JobContext(stop=stop, on_event=progress))).result()
        assert calls == [(1, (L + 1) * T + L * H), (2, (L + 1) * T + L * H), (3, (L + 1) * T + L * H)]
        assert len(forwards) == 2 + 3  # the clean and corrupted runs, then three patches
        forwards.clear()
        with pytest.raises(JobCancelled):
            engine.call(lambda lm: patch(lm, clean, corrupt, 5, job=JobContext(stop=stop))).result()
        assert forwards == []
    finally:
        handle.remove()


def test_prompts_of_different_lengths_are_refused(engine, prompts):
    clean, _ = prompts
    with pytest.raises(PromptError, match=f"clean prompt is {len(clean)} tokens long and the corrupted one "
                                          f"{len(clean) - 1}"):
        engine.call(lambda lm: patch(lm, clean, clean[:-1], 5)).result()


def test_int8_mode_equals_one_forward_per_patch(checkpoint, prompts):
    """int8 quantises each layer's input with one scale per call, so a patch batched with others would
    be computed differently from the same patch alone: int8 patches go one per forward."""
    clean, corrupt = prompts
    loaded = load_model(LoadRequest(source=str(checkpoint), device="cpu", dtype="int8"))
    target = _greedy(loaded.model, clean)
    result = patch(loaded, clean, corrupt, target)
    p_clean, p_corrupt, prob, head_prob = reference(loaded.model, clean, corrupt, target)
    assert result.clean_prob == pytest.approx(p_clean, rel=1e-5)
    assert result.corrupt_prob == pytest.approx(p_corrupt, rel=1e-5)
    np.testing.assert_allclose(result.prob, prob, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(result.head_prob, head_prob, rtol=1e-5, atol=1e-8)


def near_equal_patching() -> Patching:
    """Issue 23's example: " is" after "The return value / type of the function", p = 0.05095 and 0.05133.
    Two patches move p to 0.04468 and 0.057505: recovered 17.50 and -16.25 of a difference of 0.00038."""
    prob = np.full((2, 3), 0.05133, np.float32)
    prob[1, 1], prob[1, 2] = 0.04468, 0.057505
    return Patching(clean_ids=np.array([2, 5, 6]), corrupt_ids=np.array([2, 5, 7]), target_id=16, clean_prob=0.05095,
                    corrupt_prob=0.05133, prob=prob, head_prob=np.full((1, 2), 0.0512, np.float32))


def test_runs_too_close_to_normalise_show_the_change_in_p():
    result = near_equal_patching()
    assert result.prob_normalised[1, 1:] == pytest.approx([17.5, -16.25], rel=1e-3)  # the ratio that explodes
    assert not result.normalisable
    assert "too close to normalise" in result.too_close and "0.05095 and 0.05133" in result.too_close
    assert "\n" not in result.too_close
    assert result.shown_what == "p − corrupted"
    np.testing.assert_allclose(result.shown(result.prob)[1], [0.0, 0.04468 - 0.05133, 0.057505 - 0.05133], atol=1e-6)
    np.testing.assert_allclose(result.shown(result.head_prob), [[0.0512 - 0.05133] * 2], atol=1e-6)
    apart = Patching(clean_ids=result.clean_ids, corrupt_ids=result.corrupt_ids, target_id=16, clean_prob=0.4,
                     corrupt_prob=0.05, prob=result.prob, head_prob=result.head_prob)
    assert apart.normalisable and apart.too_close == "" and apart.shown_what.startswith("recovered")
    np.testing.assert_allclose(apart.shown(apart.prob), apart.prob_normalised)
