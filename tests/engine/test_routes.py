"""Information-flow routes against a plain implementation of the definition (routes_reference.py),
for both families, with head masks (one changed part-way) and hidden positions; the invariants; the job."""

from __future__ import annotations

import numpy as np
import pytest

from models import loaded_of
from routes_reference import reference_routes, save_biased_opt
from opt_desktop.engine import EngineService, HeadScale, LoadRequest
from opt_desktop.engine.analyses.routes import routes
from opt_desktop.engine.messages.errors import JobCancelled
from opt_desktop.engine.messages.job_context import JobContext
from opt_desktop.engine.messages.requests import RoutesRequest
from opt_desktop.engine.messages.results import Routes

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
    for name, want in expected.items():
        got = getattr(result, name)
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-6, err_msg=name)


def _ids(tokenizer, text="The cat sat on the mat, and the cat sat on the hat."):
    return tokenizer(text)["input_ids"]


def test_routes_match_the_definition(engine, tokenizer, family):
    loaded = loaded_of(engine)
    ids = _ids(tokenizer)
    result = engine.call(lambda lm: routes(lm, ids)).result()
    _compare(result, reference_routes(loaded.model, ids))
    assert result.token_ids.tolist() == ids


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
    result = engine.call(lambda lm: routes(lm, ids, hidden_positions=hidden, mask_schedule=schedule)).result()
    expected = reference_routes(loaded.model, ids, scales, hidden)
    _compare(result, expected)
    plain = engine.call(lambda lm: routes(lm, ids)).result()
    assert not np.allclose(plain.attn, result.attn, atol=1e-3)  # the mask changed something
    # Every zero part of one sum has the same share, 1e-5 over the sum's proximities: the masked head
    # from every key, and every head from a hidden key.
    for t in range(T):
        zero = np.concatenate([result.attn[0, t, :t + 1, 2], result.attn[0, t, [p for p in hidden if p <= t], :].ravel()])
        assert np.all(zero > 0) and np.ptp(zero) <= 1e-6 * zero[0]
        assert zero[0] < result.attn[0, t].max()


def test_contributions_are_non_negative_and_each_sum_adds_up_to_one(engine, tokenizer):
    result = engine.call(lambda lm: routes(lm, _ids(tokenizer))).result()
    for name in ("attn", "attn_residual", "mlp", "mlp_residual"):
        assert np.all(getattr(result, name) >= 0), name
    T = result.n_positions
    np.testing.assert_allclose(result.attn.sum(axis=(2, 3)) + result.attn_residual, 1.0, atol=1e-5)
    np.testing.assert_allclose(result.mlp + result.mlp_residual, 1.0, atol=1e-6)
    assert not np.triu(result.attn.sum(-1), 1).any()  # no part from a later key
    assert result.attn.shape == (3, T, T, 4)


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

    request = RoutesRequest((2, 40, 41, 42), (1,), ((0, ((0, 1, 0.0),)), (3, ())))
    assert roundtrip(Submit(1, request)).request == request
    result = engine.submit(RoutesRequest(tuple(_ids(tokenizer)))).future.result()
    assert_same(result, roundtrip(JobEnded(2, JobEnd("done", result=result))).end.result)
