"""Why this token, and where does the fact live: attribution and patching from the window, checked
against the engine's own functions on the same model, kept with the run."""

import numpy as np
import pytest

from opt_desktop.engine import EngineService, GenerationRequest, GenerationSettings, LoadRequest
from opt_desktop.engine.analyses.attribution import attribute
from opt_desktop.engine.analyses.patching import patch
from test_main_window import ENGINES, finished, loop, run_until  # noqa: F401  (fixtures)
from test_sessions_gui import generate, make_window  # noqa: F401


@pytest.fixture(scope="module")
def reference():
    """The demo model in an engine of the test's own: the reference the window's results must equal."""
    engine = EngineService()
    engine.load(LoadRequest(source="demo", device="cpu")).result()
    yield engine
    engine.shutdown()


@pytest.mark.parametrize("make_window", ENGINES, indirect=True)
def test_attribution_of_a_generated_token(make_window, loop, reference):  # noqa: F811
    w = make_window()
    trace = generate(w, loop, prompt="The cat sat on", settings=GenerationSettings(max_new_tokens=4))
    pos = trace.n_prompt + 1
    w.analysis.explain_token(pos)  # what "Why this token?" in the Output view's menu does
    assert w.tabs.currentWidget() is w.attribution and str(pos) in w.attribution.target.text()
    w.attribution.method.setCurrentIndex(w.attribution.method.findData("ig"))
    w.attribution.steps.setValue(8)
    w.attribution.run_button.click()
    run_until(loop, lambda: w.attribution.result is not None and not w.controller.is_busy)
    expected = reference.call(lambda loaded: attribute(loaded, trace.token_ids[:pos], trace.token_ids[pos],
                                                       method="ig", steps=8)).result()
    np.testing.assert_allclose(w.attribution.result.scores, expected.scores, atol=1e-5)
    (kept_pos, kept), = trace.attributions()
    assert kept_pos == pos and kept.method == "ig"
    assert w.output.show_prompt()  # the prompt tokens are shown, to be shaded
    shaded = [s for s in w.output.extraSelections() if s.format.background().color().alpha() > 0]
    assert len(shaded) >= 1


@pytest.mark.parametrize("make_window", ENGINES, indirect=True)
def test_patching_two_runs_of_the_same_length(make_window, loop, reference):  # noqa: F811
    w = make_window()
    settings = GenerationSettings(max_new_tokens=2)
    for ids in ((2, 40, 41, 42, 43), (2, 40, 50, 42, 43)):
        w.runs.start(GenerationRequest(prompt_ids=ids, settings=settings))
        run_until(loop, finished(w))
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


def test_patching_refuses_prompts_of_different_lengths(make_window, loop):  # noqa: F811
    w = make_window()
    settings = GenerationSettings(max_new_tokens=1)
    for ids in ((2, 40, 41), (2, 40, 41, 42)):
        w.runs.start(GenerationRequest(prompt_ids=ids, settings=settings))
        run_until(loop, finished(w))
    w.tabs.setCurrentWidget(w.patching)
    w.patching.run_button.click()
    assert "3 tokens long and the corrupted one 4" in w.patching.status.text()
    assert not w.controller.is_busy


def test_wait_for_the_job_goes_once_the_run_has_ended(make_window, loop):  # noqa: F811
    w = make_window()
    w.runs.start(GenerationRequest(prompt="The cat sat", settings=GenerationSettings(max_new_tokens=40)))
    run_until(loop, lambda: w.controller.is_busy and w.presenter.trace is not None)
    run_until(loop, lambda: "Wait for the running job" in w.attribution.status.text())
    assert "Wait for the running job" in w.patching.status.text()
    run_until(loop, lambda: not w.controller.is_busy)
    assert "Wait" not in w.attribution.status.text()
    assert "Wait" not in w.patching.status.text() and "Each cell copies" in w.patching.status.text()
