"""Interventions driven from the window: head masks (before and during a run), comparing runs, head importance."""

import numpy as np

from opt_desktop.engine import GenerationRequest, GenerationSettings, HeadScale
from window_driver import finished, generate, run_until

MASK = (HeadScale(layer=1, head=2, scale=0.0), HeadScale(layer=3, head=0, scale=0.5))


def edit_mask(w, mask):
    """Mask heads in the attention grid, as its right-click menu does (one scale at a time)."""
    for h in mask:
        w.inspector.attention.mask_heads([(h.layer, h.head)], h.scale)


def engine_run(w, request):
    events = []
    w.controller.engine.generate(request, events.append).result()
    return [e.token_id for e in events if type(e).__name__ == "TokenGenerated"]


def test_the_edited_head_mask_goes_with_generate(make_window, loop):
    w = make_window()
    edit_mask(w, MASK)
    settings = GenerationSettings(max_new_tokens=10)
    trace = generate(w, loop, prompt="Heads off", settings=settings)
    assert trace.started.head_mask == ((1, 2, 0.0), (3, 0, 0.5))
    masked = engine_run(w, GenerationRequest(prompt="Heads off", settings=settings, head_mask=MASK))
    plain = engine_run(w, GenerationRequest(prompt="Heads off", settings=settings))
    assert trace.generated_ids == masked
    assert masked != plain  # the demo's heads matter, so the test can tell a mask was applied


def test_masking_a_head_mid_run_applies_from_the_next_token(make_window, loop):
    w = make_window()
    # Sampled, not greedy: the demo's near-uniform logits make greedy runs hit </s> early on some machines.
    w.settings_panel.set_settings(GenerationSettings(max_new_tokens=450, do_sample=True, seed=1))
    w.prompt.set_text("Once upon a time")
    w.runs.generate()
    run_until(loop, lambda: w.presenter.trace is not None and w.presenter.trace.n_generated >= 3)
    w.inspector.attention.mask_heads([(0, 0), (0, 1)], 0.0)  # as the grid's menu does
    run_until(loop, lambda: w.presenter.trace.mask_changes or w.presenter.trace.finished)
    w.runs.stop()
    run_until(loop, finished(w))
    assert w.presenter.trace.mask_changes, (w.presenter.trace.finished, w.presenter.trace.n_generated)
    change = w.presenter.trace.mask_changes[0]
    assert change.index >= 3 and change.head_mask == ((0, 0, 0.0), (0, 1, 0.0))
    assert w.presenter.trace.started.head_mask == ()


def test_compare_two_runs_and_their_divergence(make_window, loop):
    w = make_window()
    settings = GenerationSettings(max_new_tokens=8)
    base = generate(w, loop, prompt="Compare me", settings=settings)
    edit_mask(w, MASK)
    w.runs.regenerate()
    run_until(loop, lambda: len(w.keeper.session.runs) == 2 and finished(w)())
    other = w.presenter.trace
    w.tabs.setCurrentWidget(w.compare)
    w.analysis.compare.compare_runs(0, 1)
    assert w.compare.divergence_button.isEnabled()
    w.compare.divergence_button.click()
    run_until(loop, lambda: w.compare.divergence is not None)
    reference = w.controller.engine.divergence(base.token_ids, (), MASK).result()
    np.testing.assert_allclose(w.compare.divergence.kl, reference.kl, equal_nan=True)
    assert other.started.head_mask and np.nanmax(w.compare.divergence.kl) > 0


def test_compare_needs_the_runs_model_loaded(make_window, loop, tmp_path):
    w = make_window()
    generate(w, loop, settings=GenerationSettings(max_new_tokens=4))
    generate(w, loop, prompt="Another", settings=GenerationSettings(max_new_tokens=4))
    path = tmp_path / "two.optsession"
    assert loop.run_until_complete(w.keeper.save_async(path)) == "saved"
    w2 = make_window(load=False)
    loop.run_until_complete(w2.sessions.open_file(path))
    w2.analysis.compare.compare_runs(0, 1)
    assert not w2.compare.divergence_button.isEnabled()
    assert "Load demo" in w2.compare.divergence_reason_text()


def test_head_importance_of_the_shown_run(make_window, loop):
    w = make_window()
    trace = generate(w, loop, prompt="Which heads matter", settings=GenerationSettings(max_new_tokens=6))
    w.tabs.setCurrentWidget(w.importance)
    # Before Start: the model's own head count, not "0 / 1 heads" over an empty map.
    n = trace.n_layers * trace.n_heads
    assert f"each of the {n} heads ({trace.n_layers} layers × {trace.n_heads} heads)" in w.importance.placeholder.text()
    assert not w.importance.progress.isVisible()
    w.importance.run_requested.emit(0.0)
    run_until(loop, lambda: w.importance.result is not None and not w.controller.is_analysing)
    reference = w.controller.engine.head_importance(trace.token_ids, trace.n_prompt).result()
    np.testing.assert_allclose(w.importance.result.delta, reference.delta, rtol=1e-5, atol=1e-6)
    assert w.importance.result.completed
    assert w.generate_button.isEnabled()
