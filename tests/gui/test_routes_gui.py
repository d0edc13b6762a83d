"""The Routes tab: computed live on the shown run (the definition's numbers, from a plain float64
forward pass of the same model: routes_reference.py), kept with it, traced back
from a chosen token, described on hover, stopped, always the shown run's, and shown again from the file
without a model."""

import threading
import time

import numpy as np
import pytest

from opt_desktop.engine import GenerationSettings
from opt_desktop.engine.analyses import routes as routes_module
from opt_desktop.session.route_graph import RouteGraph, stored_routes
from routes_reference import assert_bounded_form, reference_routes
from window_driver import ENGINES, generate, run_until


def _same_routes(got, want, rtol=1e-6, atol=1e-6) -> None:
    for name in ("edges", "head_shares", "attn_residual", "mlp", "mlp_residual"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=rtol, atol=atol, err_msg=name)
    for name in ("head_counts", "head_keys"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


@pytest.mark.parametrize("make_window", ENGINES, indirect=True)
def test_routes_are_computed_live_kept_and_traced(make_window, loop, reference):
    w = make_window()
    trace = generate(w, loop, prompt="The cat sat on the mat", settings=GenerationSettings(max_new_tokens=5))
    assert w.routes.graph is None
    w.tabs.setCurrentWidget(w.routes)  # in view, with no routes yet: they are computed at once
    run_until(loop, lambda: w.routes.graph is not None and not w.controller.is_busy)
    shown = w.routes.graph.routes
    assert shown.token_ids.tolist() == trace.token_ids
    # the demo's weights as the reference engine loaded them (the window's engine may be another process)
    demo = reference.call(lambda loaded: loaded.model).result()
    assert_bounded_form(shown, reference_routes(demo, trace.token_ids))
    kept = stored_routes(trace)
    assert kept is not None and w.keeper.modified
    _same_routes(kept, shown, rtol=1e-3, atol=1e-7)  # kept in float16

    plot = w.routes.plot
    drawn = sum(0 if item.getData()[0] is None else len(item.getData()[0]) for item in (plot.within, *plot.edges))
    assert len(plot._segments) and drawn == 2 * len(plot._segments)  # every kept edge, two points each
    last = trace.length - 1
    plot.column_clicked.emit(last)  # a click on the last token's column
    assert w.routes.position == last and str(last) in w.routes.target.text()
    traced = w.routes.graph.trace(last, w.routes.threshold.value())
    first, share = traced.inputs(1)[0]  # where most of its information came from, said in words
    assert f"Most of it comes from {first} {trace.pieces[first]!r} {share:.0%}" in w.routes.target.text()
    assert {tuple(e) for e in plot._segments[:, :3].astype(int).tolist()} == \
        {tuple(e) for e in traced.edges[:, :3].astype(int).tolist()}
    assert plot._segments[:, 2].max() <= last
    across = plot._segments[plot._segments[:, 1] != plot._segments[:, 2]]  # between two positions
    layer, source, target, weight = across[np.argmax(across[:, 3])]
    text = plot.edge_text(int(layer), int(source), int(target), float(weight))
    assert f"L{int(layer)}H" in text and f"weight {weight:.2f}" in text and "residual" not in text
    assert "residual" in plot.edge_text(int(layer), int(target), int(target), 0.5)  # an edge within a position
    assert "residual" in plot.node_text(2, last) and "MLP" in plot.node_text(2, last)
    # hovering: a node under the pointer, else the edge within a few pixels (here 1 pixel = 0.01)
    assert plot.describe_at(last, 2, 0.01, 0.01) == plot.node_text(2, last)
    middle = ((source + target) / 2, layer + 0.5)
    assert plot.describe_at(*middle, 0.01, 0.01).startswith(f"layer {int(layer)}: {int(source)} ")
    # the threshold hides and renormalises: a higher one keeps fewer edges
    before = len(plot._segments)
    w.routes.threshold.set_value(0.3)
    w.routes.threshold.edited.emit()
    assert len(plot._segments) <= before and np.all(plot._segments[:, 3] > 0)
    plot.column_clicked.emit(last)  # clicked again: every token's routes
    assert w.routes.position is None
    w.inspector.position_selected.emit(3)  # chosen in the Inspector
    assert w.routes.position == 3


def test_a_reopened_session_shows_the_routes_without_a_model(make_window, loop, tmp_path):
    w = make_window()
    trace = generate(w, loop, settings=GenerationSettings(max_new_tokens=4))
    w.tabs.setCurrentWidget(w.routes)
    run_until(loop, lambda: stored_routes(trace) is not None and not w.controller.is_busy)
    path = tmp_path / "routes.optsession"
    assert loop.run_until_complete(w.sessions.save_to(path))

    w2 = make_window(load=False)
    assert loop.run_until_complete(w2.sessions.open_file(path))
    w2.tabs.setCurrentWidget(w2.routes)
    assert w2.controller.model is None and w2.routes.graph is not None
    _same_routes(w2.routes.graph.routes, stored_routes(trace))
    assert not w2.routes.run_button.isEnabled() and len(w2.routes.plot._segments)


def _gated(monkeypatch, slow_ids):
    """Make the routes of `slow_ids` wait (as a long run's would) until released or stopped."""
    release, started = threading.Event(), threading.Event()
    real = routes_module.routes

    def gated(loaded, token_ids, **kwargs):
        if list(token_ids) == list(slow_ids):
            started.set()
            while not release.is_set():
                kwargs["job"].check()  # the job contract: a stop raises JobCancelled here
                time.sleep(0.01)
        return real(loaded, token_ids, **kwargs)

    monkeypatch.setattr(routes_module, "routes", gated)
    return release, started


def test_routes_of_a_run_no_longer_shown_never_land_on_the_shown_one(make_window, loop, monkeypatch):
    """Run A's routes are being computed when the person shows run B: A's job is stopped and nothing of
    it arrives (not in the view, not kept with either run); B's own routes are computed and shown."""
    w = make_window()
    a = generate(w, loop, prompt="The cat sat on the mat", settings=GenerationSettings(max_new_tokens=5))
    b = generate(w, loop, prompt="Once upon a time", settings=GenerationSettings(max_new_tokens=3))
    release, started = _gated(monkeypatch, a.token_ids)
    shown = []
    real_set = w.routes.set_routes
    monkeypatch.setattr(w.routes, "set_routes", lambda result, pieces=None: (shown.append(result), real_set(result, pieces)))
    w.presenter.show_run(0)
    w.tabs.setCurrentWidget(w.routes)
    run_until(loop, lambda: started.is_set() and w.controller.is_busy)
    assert w.analysis.routes.runner.origin is a and w.routes.stop_button.isEnabled()
    w.presenter.show_run(1)  # the person looks at B while A's routes are on their way
    release.set()  # whatever A's job does now, it was stopped: its end is never heard
    run_until(loop, lambda: stored_routes(b) is not None and not w.controller.is_busy)
    assert w.routes.graph is not None and w.routes.graph.routes.token_ids.tolist() == b.token_ids
    assert all(r is None or r.token_ids.tolist() == b.token_ids for r in shown)
    assert stored_routes(a) is None  # stopped, not finished
    w.presenter.show_run(0)  # back to A: its routes are computed afresh (it was stopped unasked)
    run_until(loop, lambda: stored_routes(a) is not None and not w.controller.is_busy)
    assert w.routes.graph.routes.token_ids.tolist() == a.token_ids


def test_stop_ends_the_routes_within_a_layer_and_they_are_not_started_again_unasked(make_window, loop, monkeypatch):
    w = make_window()
    trace = generate(w, loop, settings=GenerationSettings(max_new_tokens=4))
    release, started = _gated(monkeypatch, trace.token_ids)
    w.tabs.setCurrentWidget(w.routes)
    run_until(loop, lambda: started.is_set())
    w.routes.stop_button.click()
    run_until(loop, lambda: not w.controller.is_busy and not w.analysis.routes.runner.running)
    assert "stopped" in w.routes.status.text().lower() and w.routes.graph is None
    w.tabs.setCurrentWidget(w.output)
    w.tabs.setCurrentWidget(w.routes)  # in view again: a stopped run waits for the button
    assert not w.controller.is_busy and w.routes.run_button.isEnabled()
    release.set()
    w.routes.run_button.click()
    run_until(loop, lambda: w.routes.graph is not None and not w.controller.is_busy)
    assert stored_routes(trace) is not None


def test_long_tokens_under_the_columns_are_cut_and_spaced_so_they_never_touch(qtbot):
    """Tokens differ in width: the labels are cut to a few characters and thinned by the widest, so
    "currentwindow" next to short tokens stays readable; hovering the labels names the whole token."""
    from opt_desktop.engine.messages.results import Routes
    from opt_desktop.gui.widgets.routes_plot import LABEL_CHARS, RoutesPlot

    T, L, H = 60, 2, 2
    pieces = [" a", "currentwindow", " b"] * (T // 3)
    rng = np.random.default_rng(0)
    attn = rng.random((L, T, T, H)).astype(np.float32) * np.tril(np.ones((T, T), np.float32))[None, :, :, None]
    attn /= attn.sum(axis=(2, 3), keepdims=True) * 2
    routes = Routes.from_dense(list(range(T)), attn, np.full((L, T), 0.5, np.float32),
                               np.full((L, T), 0.5, np.float32), np.full((L, T), 0.5, np.float32))
    plot = RoutesPlot()
    qtbot.addWidget(plot)
    plot.resize(900, 400)
    plot.show()
    plot.set_graph(RouteGraph(routes), pieces)
    axis = plot._x_axis
    labels = [axis.label_fn(i) for i in range(T)]
    assert labels[1] == "currentwindow"[:LABEL_CHARS - 1] + "…" and labels[0] == " a"
    size = axis.geometry().width()
    (step, values), = axis.tickValues(-0.7, T - 0.3, size)
    per_index = size / T
    widest = max(axis._extent(t) for t in labels)
    assert step > 1 and step * per_index >= widest  # thinned: neighbours never touch
    for lo, hi in zip(values, values[1:]):
        assert (hi - lo) * per_index >= (axis._extent(labels[lo]) + axis._extent(labels[hi])) / 2
    assert plot.token_text(1) == "position 1 'currentwindow': click its column to trace the routes into it."
    # zoomed in on the last ten columns, the view ending just past the last: its label would be cut by
    # the plot's edge, so it is left out; the one before it fits
    lo, hi = T - 11, T - 0.95
    (step, values), = axis.tickValues(lo, hi, size)
    per_index = size / (hi - lo)
    assert step == 1 and T - 2 in values and T - 1 not in values
    assert all((v - lo) * per_index + axis._extent(labels[v]) / 2 <= size for v in values)


def test_before_any_routes_the_tab_says_what_will_be_drawn_and_why_not_yet(make_window, loop):
    """No empty plot and no empty progress bar: a sentence on what the tab will show, and the reason
    they are not there yet; once computed, the plot and its explanation."""
    w = make_window()
    w.tabs.setCurrentWidget(w.routes)
    view = w.routes
    assert view.pages.currentWidget() is view.placeholder and "one column per token" in view.placeholder.text()
    assert not view.progress.isVisible() and not view.readout.isVisible()
    assert view.status.text() == "Generate or open a run first."
    generate(w, loop, settings=GenerationSettings(max_new_tokens=3))  # in view: computed once it ends
    run_until(loop, lambda: view.graph is not None and not w.controller.is_busy)
    assert view.pages.currentWidget() is view.plot and view.readout.isVisible() and view.progress.isVisible()
    assert "grey upright line" in view.readout.text()
