"""The runs panel: names that tell runs apart, the whole description in an escaped tooltip."""

import dataclasses

from PySide6.QtGui import QTextDocument

from fakes import fake_events
from opt_desktop.gui.widgets.run_list import RunList
from opt_desktop.session import RunTrace
from opt_desktop.session.session import Session

HOSTILE = "<b>bold</b> &amp; </s> <i"


def run(**started) -> RunTrace:
    events = fake_events(n_prompt=5, n_gen=3)
    events[0] = dataclasses.replace(events[0], **started)
    trace = RunTrace(events[0])
    for ev in events[1:]:
        trace.apply(ev)
    return trace


def test_names_and_escaped_tooltips(qtbot):
    fork = run(prompt="Hello there", settings={"do_sample": True}, seed=3)
    fork.parent, fork.fork_position = 0, 2
    session = Session([run(prompt=HOSTILE), fork])
    view = RunList()
    qtbot.addWidget(view)
    view.set_session(session)
    first, second = view.topLevelItem(0), view.topLevelItem(0).child(0)
    assert first.text(0) == "#1 · “<b>bold</b> &amp…”\ngreedy · 3 tokens"  # plain text: shown as typed
    assert second.text(0) == "#2 · fork at 2 → 'p2' · “Hello there”\nseed 3 · 3 tokens"
    assert view.visualItemRect(first).height() > 1.5 * view.fontMetrics().height()  # both lines shown
    doc = QTextDocument()
    doc.setHtml(first.toolTip(0))  # what the tooltip shows, rendered as Qt renders it
    shown = doc.toPlainText()
    assert HOSTILE in shown and "greedy" in shown and "3 tokens, max tokens" in shown
    doc.setHtml(second.toolTip(0))
    assert "fork of run 1 at position 2" in doc.toPlainText() and "sampling, seed 3" in doc.toPlainText()
