"""Views restyle themselves when the palette changes (a light/dark switch), through colors.follow_palette."""

import math

from PySide6.QtGui import QColor, QPalette

from fakes import fake_trace
from opt_desktop.gui.colors import mix
from opt_desktop.gui.widgets.heatmap import Heatmap
from opt_desktop.gui.widgets.output_view import OutputView
from opt_desktop.gui.widgets.token_table import TokenTable, TokenTexts

DARK_BASE, DARK_TEXT, ORANGE = QColor("#202124"), QColor("#e8eaed"), QColor("#ff8800")


def dark(palette: QPalette) -> QPalette:
    p = QPalette(palette)
    p.setColor(QPalette.ColorRole.Base, DARK_BASE)
    p.setColor(QPalette.ColorRole.Text, DARK_TEXT)
    p.setColor(QPalette.ColorRole.Highlight, ORANGE)
    return p


def test_mix_blends_and_clamps():
    a, b = QColor(0, 0, 0), QColor(200, 100, 50)
    assert mix(a, b, 0.5).getRgb()[:3] == (100, 50, 25)
    assert mix(a, b, 2.0).rgb() == b.rgb() and mix(a, b, -1.0).rgb() == a.rgb()


def test_views_follow_a_palette_change(qtbot):
    hm = Heatmap()
    qtbot.addWidget(hm)
    assert hm.plot.backgroundBrush().color().rgb() != DARK_BASE.rgb()
    hm.setPalette(dark(hm.palette()))
    assert hm.plot.backgroundBrush().color().rgb() == DARK_BASE.rgb()

    trace = fake_trace(n_prompt=4, n_gen=3)
    out = OutputView()
    qtbot.addWidget(out)
    out.set_trace(trace)
    pos = trace.n_prompt + 1
    assert math.isfinite(trace.logprob[pos])

    def shade():
        cursor = out.textCursor()
        cursor.setPosition(out.span(pos)[0] + 1)
        return cursor.charFormat().background().color()

    assert shade().rgb() != ORANGE.rgb()
    out.setPalette(dark(out.palette()))
    assert shade().rgb() == ORANGE.rgb()  # re-rendered in the new highlight colour

    table = TokenTable(TokenTexts())
    qtbot.addWidget(table)
    table.setPalette(dark(table.palette()))
    assert table.model.prompt_brush.color().rgb() == mix(DARK_BASE, ORANGE, 0.12).rgb()
