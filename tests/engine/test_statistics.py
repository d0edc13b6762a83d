"""Every captured statistic against one plain full forward pass over the final token sequence."""

import numpy as np
import pytest
import torch

from models import run
from opt_desktop.engine.running import attention, role_stats
from opt_desktop.engine import GenerationRequest, GenerationSettings, InspectSettings
from opt_desktop.session import RunTrace, Session
from opt_desktop.session.file import load_session, save_session
from opt_desktop.session.head_roles import ROLE_NAMES, ROLES, marks_text, role_scores
from role_reference import hand_names, hand_scores

# Repeats: queries with an earlier copy (induction), one right after it (" my my": not a target).
PROMPT = "Hello, my my dog is cute and my dog is"


def _loaded(engine):
    return engine.call(lambda loaded: loaded).result()


@pytest.fixture(scope="module", params=[True, False], ids=["rows kept", "default inspection"])
def traced(engine, request):
    """A greedy run with every statistic on, with and without full attention rows (the prompt's
    weights are then recomputed over all keys, or over the causal ones only), and the reference
    forward pass of its tokens."""
    request = GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=7),
                                inspect=InspectSettings(keep_attention_rows=request.param))
    # Small attention blocks (6 queries over ~8 keys x 4 heads), so the prompt's weights are
    # recomputed in several blocks of queries, as a long prompt's are.
    # The prompt's induction targets are found a few queries at a time too.
    saved = attention._CHUNK_ELEMENTS, role_stats.InductionTargets.CHUNK
    attention._CHUNK_ELEMENTS, role_stats.InductionTargets.CHUNK = 4 * 3 * 16, 3
    try:
        events, finished = run(engine, request)
    finally:
        attention._CHUNK_ELEMENTS, role_stats.InductionTargets.CHUNK = saved
    trace = RunTrace(events[0])
    for ev in events[1:]:
        trace.apply(ev)

    model = _loaded(engine).model
    layers = model.model.decoder.layers
    rows = {}
    hooks = [layers[0].register_forward_pre_hook(
        lambda m, a, kw: rows.__setitem__(0, (a[0] if a else kw["hidden_states"])[0].clone()), with_kwargs=True)]
    for i, layer in enumerate(layers):
        hooks.append(layer.register_forward_hook(
            lambda m, a, out, i=i: rows.__setitem__(i + 1, (out[0] if isinstance(out, tuple) else out)[0].clone())))
    implementation = model.config._attn_implementation
    model.set_attn_implementation("eager")  # the reference is transformers' own eager attention
    try:
        with torch.no_grad():
            out = model(torch.tensor([trace.token_ids]), output_attentions=True, use_cache=False)
    finally:
        model.set_attn_implementation(implementation)
        for h in hooks:
            h.remove()
    hidden = torch.stack([rows[i] for i in range(len(layers) + 1)]).double().numpy()  # (L+1, T, D)
    attn = torch.stack([a[0] for a in out.attentions]).double().numpy()  # (L, H, T, T)
    logits = out.logits[0].double()
    return trace, finished, hidden, attn, logits, model


def test_engine_attention_equals_eager(engine, traced):
    """The engine's attention gives transformers' eager logits (to float32 rounding: it is SDPA's)."""
    trace, _, _, _, logits, model = traced
    with torch.no_grad():
        ours = model(torch.tensor([trace.token_ids]), use_cache=False).logits[0].double()
    assert model.config._attn_implementation == attention.ATTN_IMPLEMENTATION
    torch.testing.assert_close(ours, logits, atol=1e-5, rtol=1e-5)


def test_run_shape(traced):
    trace, finished, hidden, attn, _, model = traced
    assert finished.n_tokens == 7
    assert trace.length == trace.n_prompt + 7
    assert trace.n_layers == model.config.num_hidden_layers
    assert hidden.shape[:2] == (trace.n_layers + 1, trace.length)


def test_hidden_statistics(traced):
    trace, _, hidden, _, _, _ = traced
    fed = trace.length - 1  # the last generated token is never fed
    ref = hidden[:, :fed]
    np.testing.assert_allclose(trace.hidden("norm")[:, :fed], np.linalg.norm(ref, axis=-1), rtol=1e-4)
    np.testing.assert_allclose(trace.hidden("mean")[:, :fed], ref.mean(-1), atol=1e-4)
    np.testing.assert_allclose(trace.hidden("std")[:, :fed], ref.std(-1), rtol=1e-4)
    np.testing.assert_allclose(trace.hidden("maxabs")[:, :fed], np.abs(ref).max(-1), rtol=1e-4)
    np.testing.assert_array_equal(trace.hidden("argmax")[:, :fed], np.abs(ref).argmax(-1))
    assert np.isnan(trace.hidden("norm")[:, -1]).all()


def test_last_hidden_row_is_before_final_norm_and_projection(traced):
    """Row L is the last decoder layer's own output, not transformers' post-norm/post-projection state."""
    trace, _, hidden, _, _, model = traced
    assert hidden.shape[-1] == model.config.hidden_size
    decoder = model.model.decoder
    # Both families have something after the last layer: pre-LN a final norm, post-LN (350m) project_out.
    assert decoder.project_out is not None or decoder.final_layer_norm is not None
    fed = trace.length - 1
    with torch.no_grad():
        out = model.model(torch.tensor([trace.token_ids]), use_cache=False).last_hidden_state[0].double()
    after = np.linalg.norm(out.numpy(), axis=-1)[:fed]
    assert not np.allclose(trace.hidden("norm")[-1, :fed], after, rtol=1e-3)


def test_attention_statistics(traced):
    trace, _, _, attn, _, _ = traced
    T = trace.length
    fed = T - 1
    w = attn[:, :, :fed, :]  # (L, H, t, T): query t over keys (zero after t)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(w > 0, w * np.log(w), 0.0).sum(-1)
    dist = (w * (np.arange(fed)[:, None] - np.arange(T)[None, :])).sum(-1)
    np.testing.assert_allclose(trace.attention("entropy")[..., :fed], ent, atol=2e-4)
    np.testing.assert_allclose(trace.attention("sink")[..., :fed], w[..., 0], atol=1e-5)
    np.testing.assert_allclose(trace.attention("distance")[..., :fed], dist, atol=2e-3)
    assert np.isnan(trace.attention("entropy")[..., -1]).all()


def test_previous_token_and_induction_statistics(traced):
    """A[t, t-1], and Σ A[t, j+1] over the earlier copies j < t-1 of token t (NaN without one), for the
    prompt's queries and the generated ones, from transformers' own eager weights."""
    trace, _, _, attn, _, _ = traced
    ids = trace.token_ids
    fed = trace.length - 1
    previous = np.full(attn.shape[:2] + (fed,), np.nan)
    induction = np.full(attn.shape[:2] + (fed,), np.nan)
    for t in range(fed):
        if t >= 1:
            previous[..., t] = attn[:, :, t, t - 1]
        copies = [j for j in range(t - 1) if ids[j] == ids[t]]
        if copies:
            induction[..., t] = sum(attn[:, :, t, j + 1] for j in copies)
    assert any(ids[t] == ids[t - 1] for t in range(1, fed))  # " my my": its own key is no target
    has_copy = ~np.isnan(induction[0, 0])
    assert has_copy[:trace.n_prompt].any() and has_copy[trace.n_prompt:].any()  # both kinds of query are checked
    assert not has_copy.all()
    np.testing.assert_allclose(trace.attention("previous")[..., :fed], previous, atol=1e-5)
    np.testing.assert_allclose(trace.attention("induction")[..., :fed], induction, atol=1e-5)
    assert np.isnan(trace.attention("previous")[..., -1]).all()  # the last token was never fed


def test_head_role_scores(traced, tmp_path):
    """The previous-token, induction and sink scores of every head, and the heads they name, equal the
    definitions computed by hand over the eager weights: live and from the saved file."""
    trace, _, _, attn, _, _ = traced
    ref = hand_scores(attn, trace.token_ids, trace.length - 1)
    assert ref["induction"] is not None
    names = hand_names(ref)
    expected = "; ".join(f"{ROLE_NAMES[role]} {names[role]}" for role in ROLES)
    path = tmp_path / "run.optsession"
    save_session(Session([trace]), path)
    for shown in (trace, load_session(path).runs[0]):
        scores = role_scores(shown)
        for role in ROLES:
            np.testing.assert_allclose(scores.scores[role], ref[role][0], atol=1e-5)
            np.testing.assert_allclose(scores.baseline[role], ref[role][1], atol=1e-6)
        assert marks_text(scores) == expected


def test_full_attention_rows(traced):
    trace, _, _, attn, _, _ = traced
    if not trace.started.inspect["keep_attention_rows"]:
        assert not trace.has_attention_rows
        return
    fed = trace.length - 1
    L, H = attn.shape[:2]
    for layer in range(L):
        for head in range(H):
            m = trace.attention_matrix(layer, head)
            lower = np.tril_indices(fed)
            np.testing.assert_allclose(m[:fed][lower], attn[layer, head, :fed][lower], atol=2e-3)  # float16


def test_token_probabilities(traced):
    """logprob, rank and entropy of token t under the raw distribution at t-1, prompt included."""
    trace, _, _, _, logits, _ = traced
    logp = torch.log_softmax(logits, -1).numpy()
    ids = np.array(trace.token_ids)
    T = trace.length
    ref_lp = logp[np.arange(T - 1), ids[1:]]
    # ranks deep in the vocabulary meet float32 near-ties: allow exactly the tokens within 1e-5
    rank_lo = (logp[: T - 1] > ref_lp[:, None] + 1e-5).sum(-1) + 1
    rank_hi = (logp[: T - 1] > ref_lp[:, None] - 1e-5).sum(-1) + 1
    ref_ent = -(np.exp(logp) * logp).sum(-1)[: T - 1]
    np.testing.assert_allclose(trace.logprob[1:], ref_lp, atol=1e-4)
    assert ((rank_lo <= trace.rank[1:]) & (trace.rank[1:] <= rank_hi)).all()
    np.testing.assert_allclose(trace.entropy[1:], ref_ent, atol=1e-4)
    assert np.isnan(trace.logprob[0]) and trace.rank[0] == 0
    # the top-10 alternatives, in order, with their probabilities
    ref_top = np.argsort(-logp[: T - 1], axis=-1)[:, :10]
    np.testing.assert_array_equal(trace.top_ids[1:], ref_top)
    np.testing.assert_allclose(trace.top_probs[1:], np.exp(np.take_along_axis(logp[: T - 1], ref_top, -1)),
                               rtol=1e-4)


def test_greedy_tokens_are_rank_one(traced):
    trace, *_ = traced
    assert (trace.rank[trace.n_prompt:] == 1).all()


def test_logit_lens(engine, traced):
    trace, _, hidden, _, logits, model = traced
    decoder = model.model.decoder
    for position in (0, trace.n_prompt - 1, trace.length - 2):
        target = trace.next_token(position)
        lens = engine.logit_lens(trace.residual_rows(position), target, position).result()
        L1 = trace.n_layers + 1
        assert lens.top_ids.shape == (L1, 5) and lens.target_logprob.shape == (L1,)
        # the last row's lens is the model's own distribution
        ref = torch.log_softmax(logits[position], -1)
        np.testing.assert_array_equal(lens.top_ids[-1], torch.topk(ref, 5).indices.numpy())
        np.testing.assert_allclose(lens.target_logprob[-1], ref[target].item(), atol=0.02)  # float16 rows
        # every row: final_layer_norm (if any), project_out (if any), lm_head, from the reference states
        with torch.no_grad():
            x = torch.tensor(hidden[:, position], dtype=torch.float32)
            if decoder.final_layer_norm is not None:
                x = decoder.final_layer_norm(x)
            if decoder.project_out is not None:
                x = decoder.project_out(x)
            ref_rows = torch.log_softmax(model.lm_head(x).double(), -1)
        np.testing.assert_allclose(lens.target_logprob, ref_rows[:, target].numpy(), atol=0.02)
        np.testing.assert_allclose(lens.top_probs, np.exp(torch.topk(ref_rows, 5).values.numpy()), atol=2e-3)


def test_lens_of_a_position_without_next_token(engine, traced):
    trace, *_ = traced
    assert trace.residual_rows(trace.length - 1) is None  # the last token was never fed
    lens = engine.logit_lens(trace.residual_rows(trace.length - 2), None).result()
    assert np.isnan(lens.target_logprob).all()


def test_statistics_can_be_turned_off(engine):
    request = GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=3),
                                inspect=InspectSettings(hidden_stats=False, attention_stats=False,
                                                        keep_residuals=False))
    events, finished = run(engine, request)
    trace = RunTrace(events[0])
    for ev in events[1:]:
        trace.apply(ev)
    assert np.isnan(trace.hidden("norm")).all() and np.isnan(trace.attention("sink")).all()
    assert trace.residual_rows(0) is None
    assert not np.isnan(trace.logprob[1:]).any()  # token probabilities are always there


def test_attention_statistics_alone_equal_those_of_the_full_inspection(engine, traced):
    """With only attention statistics asked for, the prompt's queries still come from the layers'
    inputs (kept for that alone): the same numbers as with every statistic on."""
    trace = traced[0]
    request = GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=7),
                                inspect=InspectSettings(hidden_stats=False, keep_residuals=False))
    events, _ = run(engine, request)
    alone = RunTrace(events[0])
    for ev in events[1:]:
        alone.apply(ev)
    assert np.isnan(alone.hidden("norm")).all() and alone.residual_rows(0) is None
    for name in ("entropy", "sink", "distance"):
        np.testing.assert_allclose(alone.attention(name), trace.attention(name), atol=1e-5, equal_nan=True)
