"""The Routes tab: computed live on the shown run (the engine's own numbers), kept with it, traced back
from a chosen token, described on hover, and shown again from the file without a model."""

import numpy as np
import pytest

from opt_desktop.engine import GenerationSettings
from opt_desktop.engine.analyses.routes import routes
from opt_desktop.session.route_graph import stored_routes
from window_driver import ENGINES, generate, run_until


@pytest.mark.parametrize("make_window", ENGINES, indirect=True)
def test_routes_are_computed_live_kept_and_traced(make_window, loop, reference):
    w = make_window()
    trace = generate(w, loop, prompt="The cat sat on the mat", settings=GenerationSettings(max_new_tokens=5))
    assert w.routes.graph is None
    w.tabs.setCurrentWidget(w.routes)  # in view, with no routes yet: they are computed at once
    run_until(loop, lambda: w.routes.graph is not None and not w.controller.is_busy)
    expected = reference.call(lambda loaded: routes(loaded, trace.token_ids)).result()
    np.testing.assert_allclose(w.routes.graph.routes.attn, expected.attn, atol=1e-6)
    kept = stored_routes(trace)
    assert kept is not None and w.keeper.modified
    np.testing.assert_allclose(kept.mlp, expected.mlp, atol=1e-6)

    plot = w.routes.plot
    drawn = sum(0 if item.getData()[0] is None else len(item.getData()[0]) for item in (plot.within, *plot.edges))
    assert len(plot._segments) and drawn == 2 * len(plot._segments)  # every kept edge, two points each
    last = trace.length - 1
    plot.column_clicked.emit(last)  # a click on the last token's column
    assert w.routes.position == last and str(last) in w.routes.target.text()
    traced = w.routes.graph.trace(last, w.routes.threshold.value())
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
    np.testing.assert_allclose(w2.routes.graph.routes.attn, stored_routes(trace).attn, atol=1e-3)
    assert not w2.routes.run_button.isEnabled() and len(w2.routes.plot._segments)
