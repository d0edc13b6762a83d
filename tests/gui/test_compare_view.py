"""CompareView: two runs side by side, the first difference, the curves, the divergence, the settings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QTextCursor

from fake_runs import diverging_pair
from shown import shown_tip
from fakes import fake_info
from opt_desktop.engine.messages.results import Divergence
from opt_desktop.gui.widgets.compare_view import CompareView

N_PROMPT, N_GEN, DIVERGE = 4, 6, 6  # B's tokens differ from position 6 (its 3rd generated token) on


@pytest.fixture
def view(qtbot):
    v = CompareView()
    qtbot.addWidget(v)
    v.resize(900, 700)
    v.show()
    qtbot.waitExposed(v)
    return v


@pytest.fixture
def pair():
    return diverging_pair(DIVERGE, n_prompt=N_PROMPT, n_gen=N_GEN)


def char_format(edit, index):
    cursor = QTextCursor(edit.document())
    cursor.setPosition(index + 1)
    return cursor.charFormat()


def test_first_difference_is_found_and_marked(view, pair):
    a, b = pair
    view.set_runs(a, b, "#1", "#2")
    line = view.summary.text()
    assert line.startswith(f"First difference at position {DIVERGE}: '{a.pieces[DIVERGE]}' vs '{b.pieces[DIVERGE]}'")
    assert f"#1 p {100 * np.exp(a.logprob[DIVERGE]):.3g}%" in line
    for side, run, edit in (("a", a, view.text_a), ("b", b, view.text_b)):
        start, end = view.diff_span(side)
        shown = edit.toPlainText()
        assert shown == "".join(run.pieces[: run.n_prompt]) + run.text  # prompt, then the output
        assert shown[start:end] == run.text_parts[DIVERGE - run.n_prompt]
        fmt = char_format(edit, start)
        assert fmt.fontWeight() == QFont.Weight.Bold and fmt.background().style() != Qt.BrushStyle.NoBrush
        before = char_format(edit, start - 1)  # the token before the difference is not marked
        assert before.fontWeight() != QFont.Weight.Bold
        # The prompt is dimmed: its colour differs from the output's.
        assert char_format(edit, 0).foreground().color() != char_format(edit, len(shown) - 1).foreground().color()


def test_identical_and_prefix_runs(view, pair):
    a, _ = pair
    view.set_runs(a, a)
    assert view.summary.text() == f"A and B are the same {a.length} tokens."
    assert view.diff_span("a") is None
    assert not any(line.isVisible() for line in view._diff_lines)


def test_curves_hold_both_runs_values(view, pair):
    a, b = pair
    view.set_runs(a, b)
    x, y = view.prob_a_curve.getData()
    np.testing.assert_array_equal(x, np.arange(a.length))
    np.testing.assert_allclose(y, np.exp(a.logprob.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(view.prob_b_curve.getData()[1], np.exp(b.logprob.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(view.entropy_a_curve.getData()[1], a.entropy, rtol=1e-6)
    np.testing.assert_allclose(view.entropy_b_curve.getData()[1], b.entropy, rtol=1e-6)
    assert all(line.isVisible() and line.value() == DIVERGE for line in view._diff_lines)
    text = view.describe_position(DIVERGE)
    assert text.startswith(f"position {DIVERGE}  ·  A '{a.pieces[DIVERGE]}' p ")
    assert f"B '{b.pieces[DIVERGE]}'" in text and f"entropy {b.entropy[DIVERGE]:.2f}" in text


def test_divergence_plot_is_the_formula(view, pair, qtbot):
    a, b = pair
    view.set_runs(a, b)
    rng = np.random.default_rng(3)
    base = np.log(rng.random(a.length)).astype(np.float32)
    other = np.log(rng.random(a.length)).astype(np.float32)
    kl = rng.random(a.length).astype(np.float32)
    base[0] = other[0] = kl[0] = np.nan
    view.set_divergence(Divergence(logprob_base=base, logprob_other=other, kl=kl))
    x, delta = view.divergence_panel.delta_curve.getData()
    np.testing.assert_array_equal(x, np.arange(a.length))
    np.testing.assert_allclose(delta, np.exp(other.astype(np.float64)) - np.exp(base.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(view.divergence_panel.kl_curve.getData()[1], kl, rtol=1e-6)
    worst = int(np.nanargmax(kl))
    assert f"at position {worst}" in view.divergence_panel.message.text()
    view.set_divergence(None, "The engine is busy.")
    assert view.divergence_panel.delta_curve.getData()[0] is None or len(view.divergence_panel.delta_curve.getData()[0]) == 0
    assert view.divergence_panel.message.text() == "The engine is busy."
    with qtbot.waitSignal(view.divergence_requested, timeout=1000):
        view.divergence_button.click()


def test_divergence_button_says_why_it_is_off(view, pair):
    a, b = pair
    assert not view.divergence_button.isEnabled()  # no runs yet
    view.set_runs(a, b)
    view.set_divergence_available(False, "Load demo (float32) to compute the divergence.")
    assert not view.divergence_button.isEnabled()
    assert view.divergence_reason_text() == "Load demo (float32) to compute the divergence."
    assert shown_tip(view.divergence_button.toolTip()) == "Load demo (float32) to compute the divergence."
    view.set_divergence_available(True, "")
    assert view.divergence_button.isEnabled() and view.divergence_reason_text() == ""
    other_model = dataclasses.replace(fake_info(), source="facebook/opt-125m", label="opt-125m")
    a2, b2 = diverging_pair(DIVERGE, n_prompt=N_PROMPT, n_gen=N_GEN, model=other_model)
    view.set_runs(a2, b2)
    assert not view.divergence_button.isEnabled()
    assert "different models" in view.divergence_reason_text()
    assert "model" in view.differing_settings()


def test_settings_side_by_side_highlight_the_differences(view):
    a, b = diverging_pair(DIVERGE, n_prompt=N_PROMPT, n_gen=N_GEN, seed=0, head_mask=((1, 2, 0.0),),
                          hidden_positions=(2,))
    view.set_runs(a, b, "#1", "#2")
    assert set(view.differing_settings()) == {"head mask", "hidden from attention"}
    table = view.settings_table
    names = [table.verticalHeaderItem(r).text() for r in range(table.rowCount())]
    row = names.index("head mask")
    assert (table.item(row, 0).text(), table.item(row, 1).text()) == ("none", "1:2")  # counted from 0
    assert table.item(row, 1).font().bold()
    same = names.index("seed")
    assert not table.item(same, 0).font().bold()
    assert [table.horizontalHeaderItem(c).text() for c in (0, 1)] == ["#1", "#2"]


def test_choices_default_to_the_last_two_and_follow_the_user(view, qtbot, pair):
    with qtbot.waitSignal(view.runs_chosen, timeout=1000) as blocker:
        view.set_choices(["#1 greedy", "#2 sampled", "#3 fork"])
    assert blocker.args == [1, 2]
    view.set_runs(*pair)  # what the window does on runs_chosen
    with qtbot.assertNotEmitted(view.runs_chosen):
        view.set_choices(["#1 greedy", "#2 sampled", "#3 fork", "#4 new"])  # the pair still exists: kept
    assert view.chosen() == (1, 2)
    with qtbot.waitSignal(view.runs_chosen, timeout=1000) as blocker:
        view.combo_a.setCurrentIndex(3)
    assert blocker.args == [3, 2]
    view.set_runs(None, None)
    assert view.summary.text() == "Choose two runs to compare."
    assert view.settings_table.rowCount() == 0
    with qtbot.waitSignal(view.runs_chosen, timeout=1000) as blocker:
        view.set_choices(["#1", "#2", "#3", "#4"])  # same pair, but nothing shown: asked for again
    assert blocker.args == [3, 2]
