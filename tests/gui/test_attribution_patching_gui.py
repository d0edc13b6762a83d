"""Why this token, and where does the fact live: attribution and patching from the window, checked
against the engine's own functions on the same model, kept with the run."""

import numpy as np
import pytest

from opt_desktop.engine import GenerationRequest, GenerationSettings
from opt_desktop.engine.analyses.attribution import attribute
from opt_desktop.engine.analyses.patching import patch
from window_driver import ENGINES, finished, generate, run_until
from shown import shown_tip


@pytest.mark.parametrize("make_window", ENGINES, indirect=True)
def test_why_this_token_computes_the_attribution(make_window, loop, reference):
    w = make_window()
    trace = generate(w, loop, prompt="The cat sat on", settings=GenerationSettings(max_new_tokens=4))
    pos = trace.n_prompt + 1
    w.attribution.method.setCurrentIndex(w.attribution.method.findData("ig"))
    w.attribution.steps.setValue(8)
    w.output.explain_requested.emit(pos)  # "Why this token?" in the Output view's menu: no button to press
    assert w.tabs.currentWidget() is w.attribution and str(pos) in w.attribution.target.text()
    run_until(loop, lambda: w.attribution.result is not None and not w.controller.is_busy)
    expected = reference.call(lambda loaded: attribute(loaded, trace.token_ids[:pos], trace.token_ids[pos],
                                                       method="ig", steps=8)).result()
    np.testing.assert_allclose(w.attribution.result.scores, expected.scores, atol=1e-5)
    (kept_pos, kept), = trace.attributions()
    assert kept_pos == pos and kept.method == "ig"
    assert w.output.show_prompt()  # the prompt tokens are shown, to be shaded
    shaded = [s for s in w.output.extraSelections() if s.format.background().color().alpha() > 0]
    assert len(shaded) >= 1
    # Asked again, the kept attribution is shown, not computed again.
    w.output.explain_requested.emit(pos)
    assert not w.controller.is_busy and len(trace.attributions()) == 1


@pytest.mark.parametrize("make_window", ENGINES, indirect=True)
def test_patching_two_runs_of_the_same_length(make_window, loop, reference):
    w = make_window()
    _runs(w, loop, (2, 40, 41, 42, 43), (2, 40, 50, 42, 43), max_new_tokens=2)
    clean, corrupt = w.keeper.session.runs
    w.tabs.setCurrentWidget(w.patching)
    assert w.patching.clean.count() == 2
    w.patching.clean.setCurrentIndex(0)
    w.patching.corrupt.setCurrentIndex(1)
    w.patching.run_button.click()
    run_until(loop, lambda: w.patching.result is not None and not w.controller.is_busy)
    target = clean.token_ids[clean.n_prompt]
    expected = reference.call(lambda loaded: patch(loaded, clean.token_ids[:5], corrupt.token_ids[:5], target)).result()
    np.testing.assert_allclose(w.patching.result.prob, expected.prob, atol=1e-6)
    np.testing.assert_allclose(w.patching.result.head_prob, expected.head_prob, atol=1e-6)
    assert len(clean.patchings()) == 1
    assert "p = " in w.patching.residual.describe(1, 2)  # the hover shows the raw probabilities


def _runs(w, loop, *prompts, max_new_tokens=1):
    for ids in prompts:
        w.runs.start(GenerationRequest(prompt_ids=ids, settings=GenerationSettings(max_new_tokens=max_new_tokens)))
        run_until(loop, finished(w))


def test_patching_refuses_prompts_of_different_lengths(make_window, loop):
    w = make_window()
    _runs(w, loop, (2, 40, 41), (2, 40, 41, 42), (2, 50, 51))
    w.tabs.setCurrentWidget(w.patching)
    w.patching.clean.setCurrentIndex(0)
    w.patching.corrupt.setCurrentIndex(1)
    w.patching.run_button.click()
    assert "3 tokens long and the corrupted one 4" in w.patching.status.text()
    assert not w.controller.is_busy


def test_the_patch_button_says_why_it_is_off(make_window, loop):
    w = make_window()
    _runs(w, loop, (2, 40, 41))
    w.tabs.setCurrentWidget(w.patching)
    assert not w.patching.run_button.isEnabled()
    for shown in (w.patching.status.text(), shown_tip(w.patching.run_button.toolTip())):
        assert "needs two runs whose prompts have the same number of tokens" in shown
        assert "This session has 1" in shown
    _runs(w, loop, (2, 40, 41, 42))  # a second run, but not of the same length
    assert not w.patching.run_button.isEnabled()
    assert "No two prompts of this session have the same length" in w.patching.status.text()
    _runs(w, loop, (2, 50, 51))
    assert w.patching.run_button.isEnabled()
    assert "needs two runs" not in w.patching.status.text()


def test_wait_for_the_job_goes_once_the_run_has_ended(make_window, loop):
    w = make_window()
    _runs(w, loop, (2, 40, 41))  # patching needs two runs whose prompts are as long
    w.runs.start(GenerationRequest(prompt_ids=(2, 50, 51), settings=GenerationSettings(max_new_tokens=40)))
    run_until(loop, lambda: w.controller.is_busy and w.presenter.trace is not None)
    run_until(loop, lambda: "Wait for the running job" in w.attribution.status.text())
    assert "Wait for the running job" in w.patching.status.text()
    run_until(loop, lambda: not w.controller.is_busy)
    assert "Wait" not in w.attribution.status.text()
    assert "Wait" not in w.patching.status.text() and "Each cell copies" in w.patching.status.text()
