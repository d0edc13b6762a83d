"""Untrusted text (token pieces, prompts, paths) put where Qt or pyqtgraph read HTML.

Qt reads a tooltip, and a QLabel left in its default AutoText format, as HTML whenever the text
looks like markup (`Qt.mightBeRichText`: a tag before the first line break), so a token "<b>"
turns the rest bold and "</s>" vanishes. pyqtgraph renders every plot title, axis label and
LabelItem as HTML, always. Text escaped for HTML but shown as plain text is no better: "&lt;"
appears literally. So: labels that show token text are set to PlainText, and tooltips and plot
titles go through these two functions, which always yield HTML that shows the text as it is.
"""

from __future__ import annotations

import html


def html_text(text: str) -> str:
    """`text` as HTML that shows it literally, runs of spaces kept (for plot titles and labels)."""
    return f"<span style='white-space:pre'>{html.escape(text, quote=False)}</span>"


def plain_tip(text: str) -> str:
    """A tooltip that shows `text` literally, line breaks and runs of spaces kept.

    Always rich text (a <p>), so Qt never guesses: the escaped text is never shown as "&lt;".
    """
    return f"<p style='white-space:pre-wrap'>{html.escape(text, quote=False)}</p>"
