"""Routes kept with a run: the file round trip (the bounded form, and files of the first format that kept
every part), its refusals, the graph the views draw, the HTML report."""

import numpy as np
import pytest

from fakes import fake_trace
from opt_desktop.engine.messages.results import Routes
from opt_desktop.engine.messages.routes_result import EPSILON
from opt_desktop.session import Session
from opt_desktop.session.analyses import Analysis, check_declared
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
    return Routes.from_dense(token_ids, attn / total[:, :, None, None], residual / total, mlp, 1 - mlp,
                             keep_dense=True)


def _same_bounded(back: Routes, result: Routes) -> None:
    """`back` is `result` as a file keeps it: shares in float16, the rest exact."""
    np.testing.assert_allclose(back.edges, result.edges, rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(back.head_shares, result.head_shares, rtol=1e-3, atol=1e-7)
    for name in ("head_counts", "head_keys", "attn_residual", "mlp", "mlp_residual"):
        np.testing.assert_array_equal(getattr(back, name), getattr(result, name), err_msg=name)
    assert back.n_heads == result.n_heads and back.epsilon == result.epsilon


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
    assert back is not None and back.token_ids.tolist() == trace.token_ids and back.attn is None
    _same_bounded(back, result)
    L, T, _, H = result.attn.shape
    for l in range(L):  # the edges are the sums over heads of every part
        np.testing.assert_allclose(back.edge_matrix(l), result.attn[l].sum(-1), rtol=2e-3, atol=1e-6)
        for t in range(T):
            s, h, share = back.node_heads(l, t)
            np.testing.assert_allclose(share, result.attn[l, t, s, h], rtol=1e-3)
            assert len(s) == min(256, int((result.attn[l, t] >= EPSILON).sum()))


def test_a_file_of_the_first_format_with_every_part_still_opens(tmp_path):
    """Routes saved before the bounded form (params {}, `attn` (L, T(T+1)/2, H) float16) open as the
    bounded form of the same parts."""
    trace = fake_trace()
    result = fake_routes(trace.token_ids, trace.n_layers, trace.n_heads, seed=2)
    T = trace.length
    t, s = np.tril_indices(T)
    trace.analyses.append(Analysis(kind="routes", params={}, arrays={
        "attn": np.ascontiguousarray(result.attn[:, t, s, :], np.float16), "attn_residual": result.attn_residual,
        "mlp": result.mlp, "mlp_residual": result.mlp_residual}))
    path = tmp_path / "first.optsession"
    save_session(Session([trace]), path)
    back = stored_routes(load_session(path).runs[0])
    as_kept = Routes.from_dense(trace.token_ids, result.attn.astype(np.float16).astype(np.float32),
                                result.attn_residual, result.mlp, result.mlp_residual)
    _same_bounded(back, as_kept)
    assert RouteGraph(back).strongest(T - 1)  # the views can draw it


def test_routes_of_a_long_run_are_declared_within_the_limits():
    """OPT's whole context: 2,048 positions pack into 2,098,176 entries a layer, more than any count of
    positions or tokens: the file's limit is the array's size."""
    assert check_declared("edges", {"dtype": "float16", "shape": [24, 2048 * 2049 // 2]})[1] == (24, 2098176)


def test_routes_of_other_tokens_are_not_kept():
    trace = fake_trace()
    with pytest.raises(ValueError):
        keep_routes(trace, fake_routes(trace.token_ids[:-1], trace.n_layers, trace.n_heads))


@pytest.mark.parametrize("damage", ["shape", "value", "count", "key", "order", "params"])
def test_damaged_routes_are_refused(tmp_path, damage):
    trace = fake_trace()
    keep_routes(trace, fake_routes(trace.token_ids, trace.n_layers, trace.n_heads))
    analysis = trace.analyses[-1]
    arrays = analysis.arrays
    if damage == "shape":
        arrays["edges"] = arrays["edges"][:, :-1]
    elif damage == "value":
        arrays["mlp"][0, 0] = 3.0
    elif damage == "count":
        arrays["head_counts"][0, 0] += 1
    elif damage == "key":  # position 0's part from a key after it
        assert arrays["head_counts"][0, 0] > 0
        arrays["head_keys"][0] = trace.n_heads * 3
    elif damage == "order":
        first = int(arrays["head_counts"][0, :3].sum())
        arrays["head_keys"][first:first + 2] = arrays["head_keys"][first:first + 2][::-1].copy()
    else:
        analysis.params["head_parts"] += 1
    path = tmp_path / "bad.optsession"
    save_session(Session([trace]), path)
    with pytest.raises(SessionFileError, match="routes"):
        load_session(path)


def test_the_graph_renormalises_above_the_threshold_and_traces_back():
    ids = list(range(2, 10))
    L, H = 3, 2
    # layer 1 moves position 2 into position 7 through head 1, almost alone
    graph = RouteGraph(fake_routes(ids, L, H, favourite=(1, 7, 2, 1)))
    for l in range(L):
        np.testing.assert_allclose(graph.edge_matrix(l).sum(-1), 1.0, atol=1e-5)  # each node's incoming edges
        kept = graph.kept(0.05).matrix(l)
        sums = kept.sum(-1)
        assert np.all((np.abs(sums - 1) < 1e-5) | (sums == 0))
        assert np.all((kept == 0) | (graph.edge_matrix(l) >= 0.05))
    traced = graph.trace(7, 0.05)
    assert traced.active[L, 7] and traced.active[L].sum() == 1
    assert traced.active[1, 2]  # the favourite edge leads back to position 2 before layer 1
    assert traced.flow[0].sum() == pytest.approx(1.0)
    assert traced.flow[1, 2] > 0.99 * traced.flow[2, 7]  # nearly all that reached (2, 7) came from there
    inputs = traced.inputs(len(ids))  # every input token that gives it something, the largest first
    assert [s for _, s in inputs] == sorted((s for _, s in inputs), reverse=True)
    assert sum(s for _, s in inputs) == pytest.approx(1.0) and {i for i, _ in inputs} == set(np.flatnonzero(traced.flow[0]))
    assert traced.inputs(2) == inputs[:2]
    best = graph.strongest(7, 0.05)[0]
    assert best.positions[1] == 2 and best.hops[-1].layer == 1 and best.hops[-1].heads[0][0] == 1
    assert [r.weight for r in graph.strongest(7, 0.05)] == sorted((r.weight for r in graph.strongest(7, 0.05)),
                                                                   reverse=True)
    assert graph.heads(1, 7, 2)[0][0] == 1 and graph.heads(1, 7, 2)[0][1] > 0.99
    residual, unnamed = graph.rest(1, 7, 2)
    assert residual == 0 and unnamed < 0.01
    residual, _ = graph.rest(0, 5, 5)
    assert residual == pytest.approx(graph.routes.attn_residual[0, 5] / graph.edge(0, 5, 5))
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
