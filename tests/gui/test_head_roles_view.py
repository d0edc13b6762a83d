"""The attention view names the heads of the run it shows (previous-token, induction, sink), on the
hand-built model that has exactly one of each and on a random-weight OPT-350m-shaped one: the list
above the grid (the scores computed by hand over an eager forward pass), the letters on the grid, a
mouse click that selects the head and shows its stripe, the scores growing live, token text shown
as text, and what it says when a score cannot be given (an older file among them)."""

from __future__ import annotations

import numpy as np
import pytest

from PySide6.QtCore import QPoint, Qt

from fakes import fake_trace
from induction_model import INDUCTION, PREVIOUS, SINK
from models import load_tokenizer, loaded_of, save_tiny_opt
from opt_desktop.engine import EngineService, GenerationRequest, GenerationSettings, InspectSettings, LoadRequest
from opt_desktop.gui.widgets.attention_view import AttentionView
from opt_desktop.session import RunTrace, Session
from opt_desktop.session.file import load_session, save_session
from opt_desktop.session.head_roles import ROLE_LETTERS, ROLE_NAMES, ROLES
from role_reference import eager_attentions, hand_marks, hand_names, hand_scores, without_role_statistics
from shown import has_bold, label_document, shown_label

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


@pytest.fixture(scope="module")
def random_engine(tmp_path_factory):
    """A random-weight OPT shaped like opt-350m (post-LayerNorm, project_in/out), with the real tokenizer."""
    folder = save_tiny_opt(tmp_path_factory.mktemp("opt-post"), "post", load_tokenizer())
    svc = EngineService()
    svc.load(LoadRequest(source=str(folder), device="cpu")).result()
    yield svc
    svc.shutdown()
    assert svc.join(5.0)


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
    assert view.stats.stat == "score:induction"  # the grid shows the score the head was named by
    np.testing.assert_array_equal(view.grid.data(), view.roles().scores["induction"])
    assert view.grid_caption.text().startswith(f"induction score of each head over this run ({view.roles().n_copies} ")
    score = view.roles().scores["induction"][INDUCTION]
    assert view.matrix_title.shown() == f"L1H0, induction head ({score:.2f})"  # shown whole
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
    view.stats.set_stat("induction")  # the weight at the selected token: the head copies there too
    assert view.grid.data()[INDUCTION] > 0.9


def test_without_full_rows_a_click_outlines_the_head(view, induction_engine):
    view.set_trace(_trace(_events(induction_engine, f"{SENTENCE} {SENTENCE}", n=2, rows=False)))
    view.set_position(5)
    view.roles_bar.list_label.linkActivated.emit("previous:0:0")
    assert not view.showing_matrix
    assert view.grid._highlight == PREVIOUS
    assert view.stats.stat == "score:previous"
    np.testing.assert_array_equal(view.grid.data(), view.roles().scores["previous"])


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
    view.stats.set_stat("score:induction")
    assert np.isnan(view.grid.data()).all()
    assert view.grid_caption.text() == ("Induction score: none yet: no token has occurred before (repeat some text "
                                        "to see induction).")
    view.stats.set_stat("score:sink")
    np.testing.assert_array_equal(view.grid.data(), view.roles().scores["sink"])


def test_a_run_without_attention_statistics_names_no_head(view, induction_engine):
    events = []
    induction_engine.generate(GenerationRequest(prompt="a b a b", settings=GenerationSettings(max_new_tokens=2),
                                                inspect=InspectSettings(attention_stats=False)),
                              events.append).result()
    view.set_trace(_trace(events))
    view.set_position(1)
    assert "kept no attention statistics" in view.roles_bar.text()
    assert view.role_marks.letters() == {}


@pytest.mark.parametrize("model", ["induction", "random OPT-350m-shaped"])
def test_the_names_shown_are_the_scores_by_hand(view, model, request):
    """Every role's line lists the heads whose scores, computed by hand over transformers' eager
    weights of the run's tokens (prompt and generated), pass the rule; or, when none does, the closest."""
    engine = request.getfixturevalue("induction_engine" if model == "induction" else "random_engine")
    trace = _trace(_events(engine, "The cat sat on the mat. The cat sat on the mat. The cat", n=6, rows=False))
    ref = hand_scores(eager_attentions(loaded_of(engine).model, trace.token_ids), trace.token_ids, trace.length - 1)
    names = hand_names(ref)
    view.set_trace(trace)
    view.set_position(trace.n_prompt)
    expected = " · ".join(f"{ROLE_LETTERS[r]} {ROLE_NAMES[r]}: {names[r]}" for r in ROLES)
    assert view.roles_bar.text() == f"Heads on this run: {expected}"
    marked = {}
    for role, heads in hand_marks(ref).items():
        for _, layer, head in heads[:3]:
            marked[(layer, head)] = marked.get((layer, head), "") + ROLE_LETTERS[role]
    assert view.role_marks.letters() == marked


def _link_at(qtbot, label, href: str) -> QPoint:
    """Where on the label the mouse hovers over the link `href` (found by moving the mouse over it)."""
    hovered = []
    label.linkHovered.connect(hovered.append)
    try:
        for y in range(2, label.height(), 4):
            for x in range(2, label.width(), 3):
                qtbot.mouseMove(label, QPoint(x, y))
                if hovered and hovered[-1] == href:
                    return QPoint(x, y)
    finally:
        label.linkHovered.disconnect(hovered.append)
    raise AssertionError(f"no link {href!r} on {label.text()!r}")


def test_a_mouse_click_on_a_named_head_selects_it_in_the_grid(qtbot, view, repeated_events):
    trace = _trace(repeated_events)
    view.set_trace(trace)
    view.set_position(trace.length - 2)
    view.stats.set_stat("entropy")
    assert view.matrix_layer_head() == (0, 0) and view.grid._highlight == (0, 0)
    qtbot.mouseClick(view.roles_bar.list_label, Qt.MouseButton.LeftButton,
                     pos=_link_at(qtbot, view.roles_bar.list_label, "induction:1:0"))
    assert view.matrix_layer_head() == INDUCTION and view.grid._highlight == INDUCTION
    assert view.stats.stat == "score:induction"
    qtbot.mouseClick(view.roles_bar.list_label, Qt.MouseButton.LeftButton,
                     pos=_link_at(qtbot, view.roles_bar.list_label, "sink:1:1"))
    assert view.matrix_layer_head() == SINK and view.stats.stat == "score:sink"


HOSTILE = ("<b>", "</s>", "&amp;", "<a href='x'>x</a>")


def test_token_text_is_shown_as_text(view):
    """Token text is untrusted: the roles line holds none, the captions quote it as it is."""
    trace = fake_trace(n_prompt=8, n_gen=4, n_layers=3, n_heads=4, keep_rows=True)
    trace.token_ids = [2, 5, 6, 7, 5, 6, 7, 5, 6, 7, 5, 6]  # repeats: every role is scored
    trace.pieces = ["</s>"] + [HOSTILE[i % 4] for i in range(1, trace.length)]
    view.set_trace(trace)
    bar = label_document(view.roles_bar.list_label).toHtml()
    assert all(h not in view.roles_bar.text() for h in HOSTILE[:2] + HOSTILE[3:])
    assert "href=\"x\"" not in bar and "href='x'" not in bar
    for pos in range(trace.length - 1):
        view.set_position(pos)
        for stat in ("previous", "induction", "sink"):
            view.stats.set_stat(stat)
            assert f"token {pos} '{trace.pieces[pos]}'" in shown_label(view.grid_caption)
            assert not has_bold(label_document(view.grid_caption))


def _reopened_as_older(trace, tmp_path) -> RunTrace:
    path = tmp_path / "old.optsession"
    save_session(Session([trace]), path)
    return load_session(without_role_statistics(path)).runs[0]


def test_an_older_file_without_rows_says_in_words_what_is_missing(view, induction_engine, tmp_path):
    old = _reopened_as_older(_trace(_events(induction_engine, f"{SENTENCE} {SENTENCE}", n=3, rows=False)), tmp_path)
    view.set_trace(old)
    view.set_position(5)
    missing = "not in this file (saved by an earlier OPT Desktop, without full attention rows): run the prompt again"
    assert view.roles_bar.text() == (f"Heads on this run: P previous-token: {missing} · I induction: {missing} · "
                                     "S sink: L1H1 (1.00)")
    assert view.role_marks.letters() == {SINK: "S"}
    view.stats.set_stat("induction")
    assert shown_label(view.grid_caption) == ("This run's file has no induction weight (saved by an earlier OPT "
                                              "Desktop without full attention rows).")
    assert np.isnan(view.grid.data()).all()
    view.stats.set_stat("score:previous")
    assert shown_label(view.grid_caption) == f"Previous-token score: {missing}."


def test_an_older_file_with_rows_names_the_heads_from_them(view, repeated_events, tmp_path):
    fresh = _trace(repeated_events)
    old = _reopened_as_older(fresh, tmp_path)
    view.set_trace(fresh)
    names = view.roles_bar.text().removeprefix("Heads on this run: ")
    view.set_trace(old)
    view.set_position(5)
    assert view.roles_bar.text().startswith("Heads on this run (computed from the kept attention rows): ")
    assert view.roles_bar.text().endswith(names)  # the same heads, to the shown two decimals
    assert view.role_marks.letters() == {PREVIOUS: "P", INDUCTION: "I", SINK: "S"}
