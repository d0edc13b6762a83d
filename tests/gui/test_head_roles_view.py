"""The attention view names the heads of the run it shows (previous-token, induction, sink), on the
hand-built model that has exactly one of each: the list above the grid, the letters on the grid, a
click that selects the head and shows its stripe, the scores growing live, and what it says when a
score cannot be given."""

from __future__ import annotations

import numpy as np
import pytest

from fakes import fake_trace
from induction_model import INDUCTION, PREVIOUS, SINK
from opt_desktop.engine import GenerationRequest, GenerationSettings, InspectSettings
from opt_desktop.gui.widgets.attention_view import AttentionView
from opt_desktop.session import RunTrace

SENTENCE = "The quick brown fox jumps over my lazy dog."


def _events(engine, prompt, n=8, rows=True):
    events = []
    engine.generate(GenerationRequest(prompt=prompt, settings=GenerationSettings(max_new_tokens=n),
                                      inspect=InspectSettings(keep_attention_rows=rows)), events.append).result()
    return events


def _trace(events) -> RunTrace:
    trace = RunTrace(events[0])
    for ev in events[1:]:
        trace.apply(ev)
    return trace


@pytest.fixture(scope="module")
def repeated_events(induction_engine):
    return _events(induction_engine, f"{SENTENCE} {SENTENCE}")


@pytest.fixture
def view(qtbot):
    v = AttentionView()
    qtbot.addWidget(v)
    v.resize(1100, 600)
    v.show()
    qtbot.waitExposed(v)
    return v


def test_the_view_names_each_head_and_marks_it_on_the_grid(view, repeated_events):
    view.set_trace(_trace(repeated_events))
    view.set_position(3)
    text = view.roles_bar.text()
    assert "P previous-token: L0H0 (1.00)" in text
    assert "I induction: L1H0 (" in text and "S sink: L1H1 (1.00)" in text
    assert text.count("L") == 3  # no other head is named
    assert view.role_marks.letters() == {PREVIOUS: "P", INDUCTION: "I", SINK: "S"}
    assert "score ≥ 0.4" in view.roles_bar.legend.text()
    assert "induction head" in view.grid.describe(*INDUCTION)  # the hover read-out
    assert "head" in view.grid.describe(0, 3) and "induction" not in view.grid.describe(0, 3)


def test_clicking_a_named_head_selects_it_and_shows_its_stripe(view, repeated_events):
    trace = _trace(repeated_events)
    view.set_trace(trace)
    view.set_position(trace.length - 2)
    view.roles_bar.list_label.linkActivated.emit("induction:1:0")
    assert view.matrix_layer_head() == INDUCTION
    assert view.stats.stat == "induction"  # the grid shows the weight the head was named for
    assert view.matrix_title.text.startswith("L1H0, induction head (")
    shown = view.matrix.data()
    # Where the sentence repeats, each query's strongest key is the token after its earlier copy: the
    # stripe one key right of the diagonal the copy's positions make.
    ids = trace.token_ids
    for t in range(trace.n_prompt, trace.length - 1):
        earlier = [j for j in range(t - 1) if ids[j] == ids[t]]
        if len(earlier) == 1:
            assert int(np.nanargmax(shown[t])) == earlier[0] + 1
    grid = view.grid.data()
    assert grid[INDUCTION] > 0.9 and grid[PREVIOUS] < 0.5


def test_without_full_rows_a_click_outlines_the_head(view, induction_engine):
    view.set_trace(_trace(_events(induction_engine, f"{SENTENCE} {SENTENCE}", n=2, rows=False)))
    view.set_position(5)
    view.roles_bar.list_label.linkActivated.emit("previous:0:0")
    assert not view.showing_matrix
    assert view.grid._highlight == PREVIOUS
    assert view.stats.stat == "previous"


def test_the_scores_grow_live_with_the_run(view, repeated_events):
    trace = RunTrace(repeated_events[0])
    view.set_trace(trace)
    view.set_position(0)
    seen, texts = [], []
    for ev in repeated_events[1:]:
        trace.apply(ev)
        view.refresh()
        roles = view.roles()
        seen.append(None if roles is None else roles.n_copies)
        texts.append(view.roles_bar.text())
    assert seen[0] is None and "none yet" in texts[0]  # the first token comes before the prompt's statistics
    counts = [c for c in seen if c is not None]
    assert counts[-1] > counts[0]  # each generated token that copies adds a query
    assert view.role_marks.letters()[INDUCTION] == "I"


def test_a_run_without_a_repeat_says_there_is_no_induction_score(view, induction_engine):
    view.set_trace(_trace(_events(induction_engine, "A quick brown fox jumps over my lazy dog", n=1, rows=False)))
    view.set_position(4)
    assert "I induction: none yet: no token has occurred before" in view.roles_bar.text()
    assert INDUCTION not in view.role_marks.letters()
    view.stats.set_stat("induction")
    assert np.isnan(view.grid.data()).all()
    assert "has not occurred before" in view.grid_caption.text()


def test_an_older_file_says_what_is_missing(view):
    trace = fake_trace(n_prompt=6, n_gen=3)
    trace.missing_attention = frozenset({"previous", "induction"})
    for name in trace.missing_attention:
        trace.attention(name)[...] = np.nan
    view.set_trace(trace)
    view.set_position(2)
    assert "P previous-token: not in this file" in view.roles_bar.text()
    view.stats.set_stat("previous")
    assert "has no previous-token weight" in view.grid_caption.text()


def test_a_run_without_attention_statistics_names_no_head(view, induction_engine):
    events = []
    induction_engine.generate(GenerationRequest(prompt="a b a b", settings=GenerationSettings(max_new_tokens=2),
                                                inspect=InspectSettings(attention_stats=False)),
                              events.append).result()
    view.set_trace(_trace(events))
    view.set_position(1)
    assert "kept no attention statistics" in view.roles_bar.text()
    assert view.role_marks.letters() == {}
