"""Routes kept with a run: the file round trip, its refusals, the graph the views draw, the HTML report."""

import numpy as np
import pytest

from fakes import fake_trace
from opt_desktop.engine.messages.results import Routes
from opt_desktop.session import Session
from opt_desktop.session.file import SessionFileError, load_session, save_session
from opt_desktop.session.route_graph import RouteGraph, keep_routes, stored_routes


def fake_routes(token_ids, L, H, seed=0, favourite=None) -> Routes:
    """Random contributions that are shares of each sum; with `favourite` (layer, target, source, head)
    that edge takes almost everything of its sum."""
    rng = np.random.default_rng(seed)
    T = len(token_ids)
    attn = rng.random((L, T, T, H)).astype(np.float32) * np.tril(np.ones((T, T), np.float32))[None, :, :, None]
    residual = rng.random((L, T)).astype(np.float32) * T
    if favourite is not None:
        l, t, s, h = favourite
        attn[l, t] *= 0.001
        residual[l, t] *= 0.001
        attn[l, t, s, h] = 10.0 * T
    total = attn.sum(axis=(2, 3)) + residual
    mlp = rng.random((L, T)).astype(np.float32)
    return Routes(token_ids=np.asarray(token_ids, np.int64), attn=attn / total[:, :, None, None],
                  attn_residual=residual / total, mlp=mlp, mlp_residual=1 - mlp)


def test_routes_round_trip_through_the_file(tmp_path):
    trace = fake_trace()
    first = fake_routes(trace.token_ids, trace.n_layers, trace.n_heads)
    keep_routes(trace, first)
    result = fake_routes(trace.token_ids, trace.n_layers, trace.n_heads, seed=1)
    keep_routes(trace, result)  # replaces the first
    assert [a.kind for a in trace.analyses].count("routes") == 1
    path = tmp_path / "r.optsession"
    save_session(Session([trace]), path)
    back = stored_routes(load_session(path).runs[0])
    assert back is not None and back.token_ids.tolist() == trace.token_ids
    np.testing.assert_allclose(back.attn, result.attn, rtol=1e-3, atol=1e-7)  # kept in float16
    assert not np.triu(back.attn.sum(-1), 1).any()
    for name in ("attn_residual", "mlp", "mlp_residual"):
        np.testing.assert_array_equal(getattr(back, name), getattr(result, name))


def test_routes_of_other_tokens_are_not_kept():
    trace = fake_trace()
    with pytest.raises(ValueError):
        keep_routes(trace, fake_routes(trace.token_ids[:-1], trace.n_layers, trace.n_heads))


@pytest.mark.parametrize("damage", ["shape", "value"])
def test_damaged_routes_are_refused(tmp_path, damage):
    trace = fake_trace()
    keep_routes(trace, fake_routes(trace.token_ids, trace.n_layers, trace.n_heads))
    arrays = trace.analyses[-1].arrays
    if damage == "shape":
        arrays["attn"] = arrays["attn"][:, :-1]
    else:
        arrays["mlp"][0, 0] = 3.0
    path = tmp_path / "bad.optsession"
    save_session(Session([trace]), path)
    with pytest.raises(SessionFileError, match="routes"):
        load_session(path)


def test_the_graph_renormalises_above_the_threshold_and_traces_back():
    ids = list(range(2, 10))
    L, H = 3, 2
    # layer 1 moves position 2 into position 7 through head 1, almost alone
    graph = RouteGraph(fake_routes(ids, L, H, favourite=(1, 7, 2, 1)))
    np.testing.assert_allclose(graph.edges.sum(-1), 1.0, atol=1e-5)  # each node's incoming edges
    kept = graph.kept(0.05)
    sums = kept.sum(-1)
    assert np.all((np.abs(sums - 1) < 1e-5) | (sums == 0))
    assert np.all((kept == 0) | (graph.edges >= 0.05))
    traced = graph.trace(7, 0.05)
    assert traced.active[L, 7] and traced.active[L].sum() == 1
    assert traced.active[1, 2]  # the favourite edge leads back to position 2 before layer 1
    assert traced.flow[0].sum() == pytest.approx(1.0)
    assert traced.flow[1, 2] > 0.99 * traced.flow[2, 7]  # nearly all that reached (2, 7) came from there
    best = graph.strongest(7, 0.05)[0]
    assert best.positions[1] == 2 and best.hops[-1].layer == 1 and best.hops[-1].heads[0][0] == 1
    assert [r.weight for r in graph.strongest(7, 0.05)] == sorted((r.weight for r in graph.strongest(7, 0.05)),
                                                                   reverse=True)
    assert graph.heads(1, 7, 2)[0][0] == 1 and graph.heads(1, 7, 2)[0][1] > 0.99
    shares = graph.node(2, 7)
    assert shares["residual"] + shares["attention"] == pytest.approx(1.0)
    assert graph.node(0, 3) is None


def test_the_html_report_draws_the_routes_into_the_last_token_escaped():
    from opt_desktop.session.export import export_html

    trace = fake_trace()
    T = trace.length
    trace.pieces[1] = "<script>alert(1)</script>"
    keep_routes(trace, fake_routes(trace.token_ids, trace.n_layers, trace.n_heads, favourite=(0, T - 1, 1, 0)))
    page = export_html(Session([trace]))
    assert "Information-flow routes into the last token" in page and f"(position {T - 1})" in page
    assert page.count("<svg") == 1 and "<line" in page and "<script>" not in page
    assert "&lt;script&gt;" in page
    assert export_html(Session([fake_trace()])).count("<svg") == 0  # no routes, no graph
