"""OutputView: streamed text, per-token formats, tooltips, clicks, the prompt and the selection."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, Qt
from PySide6.QtGui import QHelpEvent, QTextCursor
from PySide6.QtWidgets import QApplication, QToolTip

from fakes import fake_events
from opt_desktop.engine.messages.events import TokenGenerated
from opt_desktop.gui.widgets.output_view import GROUP_START, OutputView
from opt_desktop.session import RunTrace

EMOJI = "😀"  # two UTF-16 units in the document, four UTF-8 bytes in the tokenizer


def piece_fn(token_id: int) -> str:
    return f"tok{token_id}"


@pytest.fixture
def view(qtbot):
    v = OutputView(piece_fn=piece_fn)
    qtbot.addWidget(v)
    v.resize(500, 300)
    v.show()
    qtbot.waitExposed(v)
    return v


def emoji_events():
    """A run whose third generated token adds "" and whose fourth carries a whole emoji."""
    events = fake_events(n_prompt=4, n_gen=6)
    out = []
    for ev in events:
        if isinstance(ev, TokenGenerated) and ev.index == 2:
            ev = dataclasses.replace(ev, piece="<0xF0><0x9F>", text="")
        elif isinstance(ev, TokenGenerated) and ev.index == 3:
            ev = dataclasses.replace(ev, piece="<0x98><0x80>", text=EMOJI)
        out.append(ev)
    return out


def stream(view, events, check=None):
    """Apply events one by one, refreshing after each, as the GUI's throttled timer would."""
    trace = RunTrace(events[0])
    view.set_trace(trace)
    for ev in events[1:]:
        trace.apply(ev)
        view.refresh()
        if check:
            check(trace)
    return trace


def utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def expected_positions(trace, show_prompt=False):
    """Document index -> token position, worked out from the trace alone."""
    out = []
    if show_prompt:
        for pos, piece in enumerate(trace.pieces[: trace.n_prompt]):
            out += [pos] * utf16_len(piece)
    for k, part in enumerate(trace.text_parts):
        out += [trace.n_prompt + k] * utf16_len(part)
    return out


def char_format(view, index):
    cursor = QTextCursor(view.document())
    cursor.setPosition(index + 1)  # charFormat() is the format of the character before the cursor
    return cursor.charFormat()


def click_point(view, index) -> QPoint:
    """A point just inside the character at document index `index`."""
    cursor = QTextCursor(view.document())
    cursor.setPosition(index)
    rect = view.cursorRect(cursor)
    return QPoint(rect.left() + 2, rect.center().y())


def span_middle(view, start, end) -> QPoint:
    """The middle of a one-line span (an emoji's two UTF-16 units have no cursor position between them)."""
    left, right = QTextCursor(view.document()), QTextCursor(view.document())
    left.setPosition(start)
    right.setPosition(end)
    a, b = view.cursorRect(left), view.cursorRect(right)
    assert a.top() == b.top() and b.left() - a.left() > 4
    return QPoint((a.left() + b.left()) // 2, a.center().y())


@pytest.mark.parametrize("events", [fake_events(), emoji_events()], ids=["plain", "split-emoji"])
def test_streaming_shows_exactly_the_text(view, events):
    def check(trace):
        assert view.toPlainText() == trace.text

    trace = stream(view, events, check)
    assert trace.n_generated > 0 and view.toPlainText() == trace.text


def test_refresh_only_appends(view):
    events = fake_events(n_gen=6)
    trace = RunTrace(events[0])
    view.set_trace(trace)
    changes = []
    view.document().contentsChange.connect(lambda pos, removed, added: changes.append((pos, removed, added)))
    appended = 0
    for ev in events[1:]:
        end = view.document().characterCount() - 1
        changes.clear()
        trace.apply(ev)
        view.refresh()
        for pos, removed, _added in changes:
            assert removed == 0 and pos >= end  # nothing before the old end was touched
        assert view.toPlainText() == trace.text  # ...and the new text did arrive
        if isinstance(ev, TokenGenerated):
            assert sum(added for _pos, _removed, added in changes) == len(ev.text)
            appended += 1
    assert appended == 6


def test_refresh_without_news_changes_nothing(view):
    trace = stream(view, fake_events())
    changes = []
    view.document().contentsChange.connect(lambda *a: changes.append(a))
    view.refresh()
    assert changes == [] and view.toPlainText() == trace.text


@pytest.mark.parametrize("events", [fake_events(), emoji_events()], ids=["plain", "split-emoji"])
def test_each_character_carries_its_token_position(view, events):
    trace = stream(view, events)
    expected = expected_positions(trace)
    assert len(expected) == view.document().characterCount() - 1
    assert [view.position_of_character(i) for i in range(len(expected))] == expected


def test_split_character_belongs_to_the_token_that_completes_it(view):
    trace = stream(view, emoji_events())
    empty, carrier = trace.n_prompt + 2, trace.n_prompt + 3
    start, end = view.span(carrier)
    assert end - start == 2  # the emoji: a surrogate pair, kept whole in one format
    assert view.toPlainText()[len(trace.text_parts[0] + trace.text_parts[1]):].startswith(EMOJI)
    assert char_format(view, start).property(GROUP_START) == empty
    assert view.span(empty) == (start, end)  # selecting the textless token highlights its character
    tip = view.tooltip_html(carrier)
    assert str(empty) in tip and "together" in tip


def test_emoji_waits_for_its_last_token(view):
    events = emoji_events()
    trace = RunTrace(events[0])
    view.set_trace(trace)
    shown = []
    for ev in events[1:]:
        trace.apply(ev)
        view.refresh()
        shown.append(view.toPlainText())
    # After the "" token nothing new shows; the emoji arrives whole with the next one.
    i_empty = next(i for i, ev in enumerate(events[1:]) if isinstance(ev, TokenGenerated) and ev.text == "")
    assert shown[i_empty] == shown[i_empty - 1]
    assert shown[i_empty + 1] == shown[i_empty] + EMOJI


@pytest.mark.parametrize("last_text", ["", " end"], ids=["textless-last", "text-last"])
def test_text_completed_by_finished_is_appended(view, last_text):
    """The trace gives the last token the rest of a character that only Finished's text holds."""
    events = fake_events(n_gen=4)
    *body, finished = events
    body[-1] = dataclasses.replace(body[-1], text=last_text)
    full = "".join(ev.text for ev in body if isinstance(ev, TokenGenerated)) + EMOJI
    events = body + [dataclasses.replace(finished, text=full)]

    def check(trace):
        assert view.toPlainText() == trace.text

    trace = stream(view, events, check)
    assert trace.text == full and view.toPlainText() == full
    expected = expected_positions(trace)
    assert [view.position_of_character(i) for i in range(len(expected))] == expected
    assert view.span(trace.length - 1)[1] == view.document().characterCount() - 1


def test_lower_probability_gets_stronger_shading(view):
    events = fake_events(n_gen=3)
    probs = [0.9, 0.01, 0.3]
    events = [dataclasses.replace(ev, logprob=math.log(probs[ev.index])) if isinstance(ev, TokenGenerated) else ev
              for ev in events]
    trace = stream(view, events)
    alpha = [char_format(view, view.span(trace.n_prompt + k)[0] + 1).background().color().alpha() for k in range(3)]
    assert alpha[1] > alpha[2] > alpha[0]
    highlight = view.palette().color(view.palette().ColorRole.Highlight)
    assert char_format(view, view.span(trace.n_prompt + 1)[0]).background().color().rgb() == highlight.rgb()


def test_the_output_view_and_the_html_report_shade_a_token_alike(view):
    """One helper (formatting.surprise_opacity) shades tokens in the window and in the HTML export."""
    from opt_desktop.formatting import FULL_SHADE_OPACITY, surprise_opacity
    from opt_desktop.session import Session
    from opt_desktop.session.export import export_text

    probs = [0.9, 0.01, 2.0**-12]
    events = [dataclasses.replace(ev, logprob=math.log(probs[ev.index]), text=f" shade{ev.index}")
              if isinstance(ev, TokenGenerated) else ev for ev in fake_events(n_gen=3)]
    trace = stream(view, events)
    report = export_text(Session([trace]), "html")
    for k, p in enumerate(probs):
        opacity = surprise_opacity(math.log(p))
        alpha = char_format(view, view.span(trace.n_prompt + k)[0] + 1).background().color().alpha()
        assert alpha == round(opacity * 255)
        assert f"rgba(255,140,0,{opacity:.3f})\">{' shade'}{k}</span>" in report
    assert surprise_opacity(math.log(probs[2])) == FULL_SHADE_OPACITY  # past the full shade: no darker


def test_tooltip_names_id_probability_and_alternatives(view):
    trace = stream(view, fake_events())
    pos = trace.n_prompt + 1
    tip = view.tooltip_html(pos)
    assert f"id {trace.token_ids[pos]}" in tip
    prob = float(np.exp(trace.logprob[pos]))
    assert f"{100 * prob:.3g}%" in tip
    top = int(trace.top_ids[pos][0])
    assert piece_fn(top) in tip and f"{100 * float(trace.top_probs[pos][0]):.3g}%" in tip
    assert f"rank {int(trace.rank[pos])}" in tip and f"{float(trace.entropy[pos]):.2f}" in tip


def test_tooltip_falls_back_to_ids_without_piece_fn(qtbot):
    v = OutputView()
    qtbot.addWidget(v)
    trace = stream(v, fake_events())
    pos = trace.n_prompt
    assert f"“#{int(trace.top_ids[pos][0])}”" in v.tooltip_html(pos)


def test_hovering_shows_the_tooltip(view):
    trace = stream(view, fake_events())
    pos = trace.n_prompt + 2
    point = click_point(view, view.span(pos)[0] + 1)
    vp = view.viewport()
    QApplication.sendEvent(vp, QHelpEvent(QEvent.Type.ToolTip, point, vp.mapToGlobal(point)))
    assert f"id {trace.token_ids[pos]}" in QToolTip.text()
    QToolTip.hideText()


def test_click_emits_position(view, qtbot):
    trace = stream(view, emoji_events())
    for pos in (trace.n_prompt, trace.n_prompt + 1, trace.n_prompt + 3, trace.length - 1):
        with qtbot.waitSignal(view.token_clicked, timeout=1000) as blocker:
            qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                             span_middle(view, *view.span(pos)))
        assert blocker.args == [pos]
        assert view.selected() == pos


def test_click_past_the_text_emits_nothing(view, qtbot):
    stream(view, fake_events())
    with qtbot.assertNotEmitted(view.token_clicked):
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                         QPoint(view.viewport().width() - 5, view.viewport().height() - 5))


def test_show_prompt_puts_the_prompt_pieces_first(view):
    trace = stream(view, fake_events())
    view.set_show_prompt(True)
    assert view.toPlainText() == "".join(trace.pieces[: trace.n_prompt]) + trace.text
    expected = expected_positions(trace, show_prompt=True)
    assert [view.position_of_character(i) for i in range(len(expected))] == expected
    view.set_show_prompt(False)
    assert view.toPlainText() == trace.text


def test_prompt_is_shaded_once_scored_while_streaming(view):
    events = fake_events()
    view.set_show_prompt(True)
    trace = RunTrace(events[0])
    view.set_trace(trace)
    p1 = view.span(1)[0]
    assert char_format(view, p1).background().style() == Qt.BrushStyle.NoBrush  # not scored yet
    for ev in events[1:]:
        trace.apply(ev)
        view.refresh()
        assert view.toPlainText() == "".join(trace.pieces[: trace.n_prompt]) + trace.text
    assert char_format(view, p1).background().color().alpha() > 0
    assert view.position_of_character(p1) == 1


def test_set_selected_highlights_the_token(view):
    trace = stream(view, fake_events())
    pos = trace.n_prompt + 2
    view.set_selected(pos)
    spans = [(s.cursor.selectionStart(), s.cursor.selectionEnd()) for s in view.extraSelections()]
    assert view.span(pos) in spans
    view.set_selected(None)
    assert view.extraSelections() == []
    view.set_selected(0)  # a prompt token while the prompt is hidden: nothing to highlight
    assert view.extraSelections() == []


def test_new_trace_replaces_the_old(view):
    stream(view, fake_events(seed=1))
    view.set_selected(5)
    trace = stream(view, fake_events(seed=2, n_gen=3))
    assert view.toPlainText() == trace.text and view.selected() is None
    view.set_trace(None)
    assert view.toPlainText() == ""
    view.refresh()  # no trace: nothing to do


# --- interventions: hiding prompt tokens, forking ---------------------------------------------------

def menu_texts(menu):
    return [a.text() for a in menu.actions()]


def menu_action(menu, text):
    found = [a for a in menu.actions() if a.text() == text]
    assert found, f"no action {text!r} in {menu_texts(menu)}"
    return found[0]


def select_range(view, start, end):
    cursor = view.textCursor()
    cursor.setPosition(start)
    cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
    view.setTextCursor(cursor)


def marks(view):
    """{(start, end): has background} for the struck-through extra selections."""
    return {(s.cursor.selectionStart(), s.cursor.selectionEnd()): s.format.background().style() != Qt.BrushStyle.NoBrush
            for s in view.extraSelections() if s.format.fontStrikeOut()}


def test_selected_prompt_tokens_are_hidden_but_never_position_0(view, qtbot):
    view.set_show_prompt(True)
    trace = stream(view, fake_events(n_prompt=5))
    select_range(view, view.span(0)[0], view.span(trace.n_prompt + 1)[1])  # </s>, the prompt and 2 generated
    menu = view.context_menu(click_point(view, view.span(2)[0]))
    texts = menu_texts(menu)
    zero = next(a for a in menu.actions() if a.text().startswith("The leading </s> (position 0) cannot be hidden"))
    assert not zero.isEnabled()
    with qtbot.waitSignal(view.hidden_positions_changed, timeout=1000) as blocker:
        menu_action(menu, "Hide from attention (positions 1–4)").trigger()
    assert blocker.args == [(1, 2, 3, 4)]
    assert view.hidden_positions() == (1, 2, 3, 4)
    assert "Clear hidden tokens" not in texts  # nothing was hidden when the menu opened
    # Struck through on a tint: exactly the hidden prompt tokens.
    assert marks(view) == {view.span(p): True for p in (1, 2, 3, 4)}
    assert "Will be hidden from attention in the next run" in view.tooltip_html(2)


def test_show_again_and_clear_hidden_tokens(view, qtbot):
    view.set_show_prompt(True)
    trace = stream(view, fake_events(n_prompt=5))
    with qtbot.assertNotEmitted(view.hidden_positions_changed):
        view.set_hidden_positions([0, 3, 1, 2, 3])  # 0 can never be hidden: dropped
    assert view.hidden_positions() == (1, 2, 3)
    menu = view.context_menu(click_point(view, view.span(2)[0] + 1))  # no selection: the token under the mouse
    assert not any(t.startswith("Hide from attention") for t in menu_texts(menu))
    with qtbot.waitSignal(view.hidden_positions_changed, timeout=1000) as blocker:
        menu_action(menu, "Show to attention again (position 2)").trigger()
    assert blocker.args == [(1, 3)]
    assert marks(view) == {view.span(1): True, view.span(3): True}
    menu = view.context_menu(click_point(view, view.span(trace.n_prompt)[0] + 1))  # a generated token
    with qtbot.waitSignal(view.hidden_positions_changed, timeout=1000) as blocker:
        menu_action(menu, "Clear hidden tokens").trigger()
    assert blocker.args == [()]
    assert marks(view) == {}


def test_hiding_needs_the_prompt_shown(view):
    trace = stream(view, fake_events())
    menu = view.context_menu(click_point(view, view.span(trace.n_prompt)[0] + 1))
    hint = menu_action(menu, "Show the prompt tokens (View menu) to hide some from attention")
    assert not hint.isEnabled()
    assert not any(t.startswith("Hide from attention") for t in menu_texts(menu))


def test_tokens_the_run_hid_are_struck_through(view):
    events = fake_events(n_prompt=5)
    events[0] = dataclasses.replace(events[0], hidden_positions=(2, 3))
    view.set_show_prompt(True)
    stream(view, events)
    assert marks(view) == {view.span(2): False, view.span(3): False}  # struck through, no tint
    assert "Hidden from attention in this run" in view.tooltip_html(3)
    view.set_hidden_positions([3])
    assert marks(view) == {view.span(2): False, view.span(3): True}


def test_fork_menu_offers_the_alternatives_but_not_the_token_itself(view, qtbot):
    from fake_runs import with_alternatives

    events = fake_events(n_prompt=4, n_gen=5)
    pos = 4 + 2
    chosen = next(ev.token_id for ev in events if isinstance(ev, TokenGenerated) and ev.position == pos)
    alts = (chosen + 7, chosen, chosen + 9)
    trace = stream(view, with_alternatives(events, pos, alts))
    menu = view.context_menu(span_middle(view, *view.span(pos)))
    forks = [a for a in menu.actions() if a.text().startswith("Fork here with")]
    p0, p2 = trace.top_probs[pos][0], trace.top_probs[pos][2]
    assert [a.text() for a in forks] == [f"Fork here with 'tok{chosen + 7}' (p = {100 * p0:.3g}%)",
                                         f"Fork here with 'tok{chosen + 9}' (p = {100 * p2:.3g}%)"]
    with qtbot.waitSignal(view.fork_requested, timeout=1000) as blocker:
        forks[1].trigger()
    assert blocker.args == [pos, chosen + 9]


def test_prompt_tokens_fork_too_except_position_0(view, qtbot):
    view.set_show_prompt(True)
    trace = stream(view, fake_events(n_prompt=5))
    menu = view.context_menu(click_point(view, view.span(0)[0] + 1))
    assert not menu_action(menu, "Position 0 (the leading </s>) cannot be forked: nothing predicts it").isEnabled()
    assert not any(t.startswith("Fork here with") for t in menu_texts(menu))
    menu = view.context_menu(click_point(view, view.span(2)[0] + 1))
    first = next(a for a in menu.actions() if a.text().startswith("Fork here with"))
    expected = next(int(t) for t in trace.top_ids[2] if int(t) != trace.token_ids[2])
    with qtbot.waitSignal(view.fork_requested, timeout=1000) as blocker:
        first.trigger()
    assert blocker.args == [2, expected]


def test_right_click_opens_the_menu(view, qtbot):
    from PySide6.QtGui import QContextMenuEvent

    from fake_runs import capture_next_menu

    trace = stream(view, fake_events())
    point = span_middle(view, *view.span(trace.n_prompt + 1))
    shown = capture_next_menu()
    vp = view.viewport()
    QApplication.sendEvent(vp, QContextMenuEvent(QContextMenuEvent.Reason.Mouse, point, vp.mapToGlobal(point)))
    qtbot.waitUntil(lambda: bool(shown), timeout=2000)
    assert any(t.startswith("Fork here with") for t in shown[0])
