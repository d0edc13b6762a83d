"""Information-flow routes against a plain implementation of the definition (routes_reference.py),
for both families, with head masks (one changed part-way) and hidden positions: every part (dense) and
the bounded form (edge sums, the head parts kept); the invariants; the memory bound; the job."""

from __future__ import annotations

import numpy as np
import pytest

from models import loaded_of
from routes_reference import assert_bounded_form, reference_routes, save_biased_opt
from opt_desktop.engine import EngineService, HeadScale, LoadRequest
from opt_desktop.engine.analyses import routes as routes_module
from opt_desktop.engine.analyses.routes import check_dense, routes
from opt_desktop.engine.messages.errors import JobCancelled, SettingsError
from opt_desktop.engine.messages.job_context import JobContext
from opt_desktop.engine.messages.requests import RoutesRequest
from opt_desktop.engine.messages.results import Routes
from opt_desktop.engine.messages.routes_result import EPSILON, select_heads

MASK = (HeadScale(layer=0, head=2, scale=0.0), HeadScale(layer=1, head=1, scale=0.5), HeadScale(layer=2, head=3, scale=0.0))


@pytest.fixture(scope="module")
def engine(tmp_path_factory, family, tokenizer):
    folder = save_biased_opt(tmp_path_factory.mktemp(f"routes-{family}"), family, tokenizer)
    svc = EngineService()
    svc.load(LoadRequest(source=str(folder), device="cpu")).result()
    yield svc
    svc.shutdown()
    assert svc.join(5.0)


def _compare(result: Routes, expected: dict) -> None:
    """Every part (dense), exactly as the reference; and the bounded form from the same reference."""
    for name, want in expected.items():
        got = getattr(result, name)
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-6, err_msg=name)
    assert_bounded_form(result, expected)


def _ids(tokenizer, text="The cat sat on the mat, and the cat sat on the hat."):
    return tokenizer(text)["input_ids"]


def test_routes_match_the_definition(engine, tokenizer, family):
    loaded = loaded_of(engine)
    ids = _ids(tokenizer)
    expected = reference_routes(loaded.model, ids)
    result = engine.call(lambda lm: routes(lm, ids, dense=True)).result()
    _compare(result, expected)
    assert result.token_ids.tolist() == ids
    bounded = engine.call(lambda lm: routes(lm, ids)).result()  # what the window asks for
    assert bounded.attn is None
    assert_bounded_form(bounded, expected)
    for name in ("edges", "head_counts", "head_keys", "head_shares"):  # the same with every part or without
        np.testing.assert_array_equal(getattr(bounded, name), getattr(result, name), err_msg=name)


def test_the_bounded_form_is_the_dense_ones_parts_at_least_epsilon_the_largest_per_node(engine, tokenizer,
                                                                                         monkeypatch):
    """Parts are dropped head by head as the node's sum grows (routes.py's _LayerParts): what is left
    is exactly what choosing from every part gives, the cap on parts per node included."""
    ids = _ids(tokenizer)
    for cap in (256, 5):
        monkeypatch.setattr(routes_module, "MAX_HEAD_PARTS", cap)
        result = engine.call(lambda lm: routes(lm, ids, dense=True)).result()
        L, T, _, H = result.attn.shape
        assert result.head_counts.max() == 5 if cap == 5 else result.head_counts.max() < cap  # the cap binds, or not
        at = 0
        for l in range(L):
            t, s, h = np.nonzero(result.attn[l] >= 0)
            counts, keys, shares = select_heads(t, s * H + h, result.attn[l, t, s, h], T, EPSILON, cap)
            np.testing.assert_array_equal(result.head_counts[l], counts)
            np.testing.assert_array_equal(result.head_keys[at:at + len(keys)], keys)
            np.testing.assert_allclose(result.head_shares[at:at + len(keys)], shares, rtol=1e-6)
            at += len(keys)
        assert at == len(result.head_keys)


def test_routes_of_a_head_masked_run_with_hidden_positions(engine, tokenizer, family):
    """The run's interventions are the routes' too; a mask changed part-way applies from its position;
    a head scaled to 0 and a hidden key are zero parts: the floor of 1e-5 over the sum's proximities."""
    loaded = loaded_of(engine)
    ids = _ids(tokenizer)
    T, cfg = len(ids), loaded.model.config
    hidden, change = (2, 5), 9
    schedule = ((0, MASK), (change, MASK[:1]))
    scales = np.ones((cfg.num_hidden_layers, T, cfg.num_attention_heads))
    for m in MASK:
        scales[m.layer, :change, m.head] = m.scale
    scales[MASK[0].layer, change:, MASK[0].head] = MASK[0].scale
    result = engine.call(lambda lm: routes(lm, ids, hidden_positions=hidden, mask_schedule=schedule, dense=True)).result()
    expected = reference_routes(loaded.model, ids, scales, hidden)
    _compare(result, expected)
    plain = engine.call(lambda lm: routes(lm, ids, dense=True)).result()
    assert not np.allclose(plain.attn, result.attn, atol=1e-3)  # the mask changed something
    # Every zero part of one sum has the same share, 1e-5 over the sum's proximities: the masked head
    # from every key, and every head from a hidden key.
    for t in range(T):
        zero = np.concatenate([result.attn[0, t, :t + 1, 2], result.attn[0, t, [p for p in hidden if p <= t], :].ravel()])
        assert np.all(zero > 0) and np.ptp(zero) <= 1e-6 * zero[0]
        assert zero[0] < result.attn[0, t].max()


def test_contributions_are_non_negative_and_each_sum_adds_up_to_one(engine, tokenizer):
    result = engine.call(lambda lm: routes(lm, _ids(tokenizer), dense=True)).result()
    for name in ("attn", "edges", "head_shares", "attn_residual", "mlp", "mlp_residual"):
        assert np.all(getattr(result, name) >= 0), name
    T = result.n_positions
    np.testing.assert_allclose(result.attn.sum(axis=(2, 3)) + result.attn_residual, 1.0, atol=1e-5)
    np.testing.assert_allclose(result.edges.sum(axis=1), result.attn.sum(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(result.mlp + result.mlp_residual, 1.0, atol=1e-6)
    assert not np.triu(result.attn.sum(-1), 1).any()  # no part from a later key
    assert result.attn.shape == (3, T, T, 4)
    for l in range(3):  # the kept parts of an edge never add up to more than it
        edges = result.edge_matrix(l)
        for t in range(T):
            s, _, share = result.node_heads(l, t)
            assert np.all(np.bincount(s, share, minlength=T) <= edges[t] * (1 + 1e-6))


def test_every_part_is_refused_past_the_memory_bound_with_the_longest_that_fits():
    check_dense(12, 512, 12)  # opt-125m's 512 tokens: 144 MiB, it fits
    with pytest.raises(SettingsError) as info:
        check_dense(24, 2048, 16)  # opt-350m's 2,048 tokens
    message = str(info.value)
    assert "6.0 GiB" in message and "256 MiB" in message and "418 tokens" in message
    assert "\n" not in message
    check_dense(24, 418, 16)
    with pytest.raises(SettingsError):
        check_dense(24, 419, 16)


def test_routes_job_reports_progress_and_stops_within_a_layer(engine, tokenizer):
    ids = _ids(tokenizer) * 3
    seen = []
    job = engine.submit(RoutesRequest(tuple(ids)), on_event=seen.append)
    end = job.wait(60)
    assert end.reason == "done" and isinstance(end.result, Routes)
    L, H = end.result.n_layers, end.result.n_heads
    assert [(p.done, p.total) for p in seen] == [(i, L * H) for i in range(1, L * H + 1)]

    calls = []

    def progress(p):
        calls.append(p.done)
        if p.done == 1:  # the first head of the first layer is done: stop before the layer ends
            context.stop()

    context = JobContext(on_event=progress)
    with pytest.raises(JobCancelled):
        engine.call(lambda lm: routes(lm, ids, job=context)).result()
    assert calls == [1]


def test_routes_cross_the_engine_pipe(engine, tokenizer):
    """The window's engine runs in a child process: the request and the result cross its wire exactly."""
    from test_engine_process import assert_same, roundtrip
    from opt_desktop.engine.jobs.job import JobEnd
    from opt_desktop.engine.process.process_messages import JobEnded, Submit

    request = RoutesRequest((2, 40, 41, 42), (1,), ((0, ((0, 1, 0.0),)), (3, ())), dense=True)
    assert roundtrip(Submit(1, request)).request == request
    for dense in (False, True):
        result = engine.submit(RoutesRequest(tuple(_ids(tokenizer)), dense=dense)).future.result()
        assert (result.attn is not None) == dense
        assert_same(result, roundtrip(JobEnded(2, JobEnd("done", result=result))).end.result)
