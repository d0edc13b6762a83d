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
    assert HOSTILE in shown and "greedy" in shown and "finished: length" in shown
    doc.setHtml(second.toolTip(0))
    assert "fork of run 1 at position 2" in doc.toPlainText() and "sampling, temperature 1" in doc.toPlainText()


def test_run_details_panel_shows_the_runs_summary(qtbot):
    from opt_desktop.engine.messages.settings import GenerationSettings
    from opt_desktop.gui.widgets.run_details import RunDetails
    from opt_desktop.session.describe import run_summary

    trace = run(prompt=HOSTILE, settings={"do_sample": True, "temperature": 0.5}, seed=11,
                head_mask=((1, 2, 0.0),), hidden_positions=(1, 2))
    panel = RunDetails()
    qtbot.addWidget(panel)
    panel.set_trace(trace)
    summary = run_summary(trace)
    shown = {name: label.text() for name, label in panel.values.items()}
    model = trace.started.model
    # The model row is short (source and precision); the full line, label included, is its tooltip.
    assert shown.pop("model") == f"{model.source} ({model.dtype} on {model.device})"
    assert summary["model"] in panel.values["model"].toolTip()
    assert shown == {k: v for k, v in summary.items() if k != "model"}
    assert panel.values["head mask"].text() == "1:2" and panel.values["hidden tokens"].text() == "1–2"
    with qtbot.waitSignal(panel.use_settings, timeout=1000) as blocker:
        panel.use_button.click()
    assert blocker.args[0] == GenerationSettings(do_sample=True, temperature=0.5, seed=11)
