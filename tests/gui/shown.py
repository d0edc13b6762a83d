"""What a person actually sees for a piece of text Qt or pyqtgraph may read as HTML."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QTextDocument
from PySide6.QtGui import Qt as GuiQt  # mightBeRichText lives in QtGui's Qt namespace
from PySide6.QtWidgets import QGraphicsTextItem, QLabel


def _document(text: str, rich: bool) -> QTextDocument:
    doc = QTextDocument()
    if rich:
        doc.setHtml(text)
    else:
        doc.setPlainText(text)
    return doc


def tip_document(tip: str) -> QTextDocument:
    """A tooltip (or a table item's ToolTipRole) as QToolTip lays it out: HTML when it looks like HTML."""
    return _document(tip, GuiQt.mightBeRichText(tip))


def label_document(label: QLabel) -> QTextDocument:
    fmt = label.textFormat()
    rich = fmt == Qt.TextFormat.RichText or (fmt == Qt.TextFormat.AutoText and GuiQt.mightBeRichText(label.text()))
    return _document(label.text(), rich)


def shown_tip(tip: str) -> str:
    return tip_document(tip).toPlainText()


def shown_label(label: QLabel) -> str:
    return label_document(label).toPlainText()


def shown_item(item: QGraphicsTextItem) -> str:
    """A pyqtgraph title, axis label or LabelItem: always HTML, so what its document holds."""
    return item.document().toPlainText()


def has_bold(doc: QTextDocument) -> bool:
    """Whether any run of the text is drawn bold (a stray "<b>" read as markup)."""
    block = doc.begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            frag = it.fragment()
            if frag.isValid() and frag.charFormat().fontWeight() > QFont.Weight.Normal:
                return True
            it += 1
        block = block.next()
    return False
