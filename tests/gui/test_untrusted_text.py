"""Token text is untrusted: '</s>', '<b>' and '&amp;' show as themselves in every view of the Inspector
(cells, read-outs, plot titles, tooltips), and nothing turns bold."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt

from fake_runs import build
from fakes import fake_events
from opt_desktop.engine.messages.events import LensResult, Started, TokenGenerated
from opt_desktop.engine.messages.results import HeadImportance
from opt_desktop.gui.widgets.head_importance_view import HeadImportanceView
from opt_desktop.gui.widgets.inspector import Inspector
from opt_desktop.gui.widgets.token_table import COL_ALTS, COL_TOKEN
from shown import has_bold, label_document, shown_item, shown_label, shown_tip, tip_document

HOSTILE = ("</s>", "<b>", "&amp;")
TIP = Qt.ItemDataRole.ToolTipRole


def hostile_trace():
    """A run whose prompt and generated tokens are '</s>', '<b>', '&amp;' and ' <' (with text after it)."""
    events = fake_events(n_prompt=4, n_gen=5, n_layers=3, n_heads=2, keep_rows=True)
    prompt = ("</s>", "<b>", "&amp;", " <")
    generated = ("</s>", "<b>", "&amp;", " <", "<i>")
    out = []
    for ev in events:
        if isinstance(ev, Started):
            ev = dataclasses.replace(ev, prompt_pieces=prompt)
        elif isinstance(ev, TokenGenerated):
            ev = dataclasses.replace(ev, piece=generated[ev.index], text=generated[ev.index],
                                     top_pieces=tuple(generated[(ev.index + j) % 5] for j in range(len(ev.top_ids))))
        out.append(ev)
    return build(out)


def hostile_piece(token_id: int) -> str:
    return HOSTILE[token_id % 3]


@pytest.fixture
def inspector(qtbot):
    w = Inspector(piece_fn=hostile_piece)
    qtbot.addWidget(w)
    w.resize(1100, 750)
    w.set_trace(hostile_trace())
    w.show()
    qtbot.waitExposed(w)
    return w


def literal(doc_or_text, *needles) -> None:
    text = doc_or_text if isinstance(doc_or_text, str) else doc_or_text.toPlainText()
    for needle in needles:
        assert needle in text, f"{needle!r} not shown in {text!r}"


def test_token_table_cells_and_tooltips(inspector):
    model = inspector.table.model
    trace = inspector._trace
    for pos in range(trace.length):
        piece = trace.pieces[pos]
        assert model.index(pos, COL_TOKEN).data() == f"'{piece}'"  # a plain-text cell
        doc = tip_document(model.index(pos, COL_TOKEN).data(TIP))
        literal(doc, f"'{piece}'")
        assert not has_bold(doc)
    doc = tip_document(model.index(trace.n_prompt, COL_ALTS).data(TIP))
    literal(doc, *HOSTILE)
    assert not has_bold(doc)


def test_header_and_lens(inspector):
    trace = inspector._trace
    pos = 1  # '<b>', followed by '&amp;'
    inspector.select_position(pos)
    assert "'<b>'" in shown_label(inspector.header)
    inspector.tabs.setCurrentWidget(inspector.lens)
    ids = np.array([[2, 3, 4, 5, 6]] * (trace.n_layers + 1))
    result = LensResult(position=pos, top_ids=ids, top_probs=np.full(ids.shape, 0.1, np.float32),
                        top_pieces=tuple(("</s>", "<b>", "&amp;", " <", "x") for _ in ids),
                        target_id=trace.next_token(pos), target_logprob=np.log(np.full(len(ids), 0.01)))
    inspector.set_lens(result)
    lens = inspector.lens
    # The title names the next token, '&amp;', whole: not "p('&') by layer".
    title = lens.plot.getPlotItem().titleLabel.item
    assert shown_item(title) == "p('&amp;') by layer"
    assert not has_bold(title.document())
    literal(label_document(lens.status), "'&amp;'")
    for c, piece in enumerate(("</s>", "<b>", "&amp;", " <")):
        item = lens.table.item(0, c)
        assert item.text().startswith(f"'{piece}'")
        doc = tip_document(item.toolTip())
        literal(doc, f"'{piece}'")
        assert not has_bold(doc)


@pytest.mark.parametrize("pos", [0, 1, 3])  # '</s>', '<b>', and ' <' which would swallow the rest of a title
def test_lens_title_with_each_next_token(inspector, pos):
    trace = inspector._trace
    inspector.select_position(pos - 1 if pos else 0)
    inspector.tabs.setCurrentWidget(inspector.lens)
    at = inspector.selected_position()
    ids = np.array([[7, 8, 9, 10, 11]] * (trace.n_layers + 1))
    result = LensResult(position=at, top_ids=ids, top_probs=np.full(ids.shape, 0.1, np.float32),
                        top_pieces=tuple(("a", "b", "c", "d", "e") for _ in ids),
                        target_id=trace.next_token(at), target_logprob=np.log(np.full(len(ids), 0.01)))
    inspector.set_lens(result)
    expected = trace.pieces[at + 1]
    assert shown_item(inspector.lens.plot.getPlotItem().titleLabel.item) == f"p('{expected}') by layer"


def test_hidden_view_title_and_readout(qtbot, inspector):
    inspector.tabs.setCurrentWidget(inspector.hidden)
    inspector.select_position(1)
    title = inspector.hidden.plot.getPlotItem().titleLabel.item
    literal(shown_item(title), "token 1 '<b>'")
    assert not has_bold(title.document())
    hm = inspector.hidden.heatmap
    qtbot.waitUntil(lambda: hm.view.viewRange()[0][1] >= 1)
    point = hm.plot.mapFromScene(hm.view.mapViewToScene(QPointF(1, 0)))  # token 1, row emb
    qtbot.mouseMove(hm.plot.viewport(), point)
    qtbot.waitUntil(lambda: "token 1" in hm.readout.text())
    literal(label_document(hm.readout), "'<b>'")
    assert not has_bold(label_document(hm.readout))


def test_attention_caption_readouts_and_matrix(qtbot, inspector):
    inspector.tabs.setCurrentWidget(inspector.attention)
    inspector.select_position(2)  # '&amp;'
    att = inspector.attention
    literal(label_document(att.grid_caption), "token 2 '&amp;'")
    m = att.matrix
    qtbot.waitUntil(lambda: m.view.viewRange()[0][1] >= 2)
    point = m.plot.mapFromScene(m.view.mapViewToScene(QPointF(1, 2)))  # query 2 '&amp;', key 1 '<b>'
    qtbot.mouseMove(m.plot.viewport(), point)
    qtbot.waitUntil(lambda: "query" in m.readout.text())
    doc = label_document(m.readout)
    literal(doc, "query token 2 '&amp;'", "key token 1 '<b>'")
    assert not has_bold(doc)
    inspector.select_position(1)
    doc = label_document(att.grid_caption)
    literal(doc, "token 1 '<b>'")
    assert not has_bold(doc)


def test_head_importance_texts_are_plain(qtbot):
    v = HeadImportanceView()
    qtbot.addWidget(v)
    v.set_available(False, "Load <b>folder &amp; co</b> (float32) to measure head importance on this run.")
    literal(label_document(v.reason), "<b>folder &amp; co</b>")
    assert not has_bold(label_document(v.reason))
    literal(shown_tip(v.start_button.toolTip()), "<b>folder &amp; co</b>")
    v.set_result(HeadImportance(delta=np.zeros((2, 2), np.float32), baseline_logprob=-1.0, completed=True))
    assert not has_bold(label_document(v.status))
