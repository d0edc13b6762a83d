"""Hidden-state statistics: a layers × tokens heatmap and, for the selected token, a per-layer plot.

Rows are labelled `embed, 0, 1, …, L-1`: row 0 is the input of decoder layer 0 ("embed"), and the
row labelled i (row i + 1 of the arrays) is the output of `decoder.layers[i]`, so layers count from
0 as everywhere else. The plot names the hidden dimension of largest |x| (OPT's outlier dimensions)
where it changes from one row to the next; labels are placed in pixels, above, below or beside their
point, inside the plot and clear of each other and of the points, and dropped where there is no room (each point's tooltip
and the line under the plot still name every one).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ...engine.messages.rows import row_name, row_tick
from ...session.trace import RunTrace
from ..colors import follow_palette
from ..rich_text import plain_tip
from .heatmap import Axis, FittedTitle, Heatmap, layer_plot, style_plot
from .splitter import splitter
from .stat_box import StatBox
from .token_table import quote_piece

STATS = (("norm", "norm ‖x‖"), ("mean", "mean"), ("std", "std"), ("maxabs", "max |x|"))
LABEL_GAP = 3  # pixels between a point's marker and its label
MAX_RUNS_SHOWN = 4  # runs of one outlier dimension named under the plot; the tooltip has them all
PLOT_MIN_HEIGHT = 140
OUTLIER_LINES = 2  # the height of the line under the plot
OUTLIER_PREFIX = "Outlier dims (largest |x|): "


def token_name(trace: RunTrace | None, pos: int, max_chars: int = 24) -> str:
    """"token 12 ' the'", the text cut short so titles and read-outs stay on one line."""
    if trace is None or not (0 <= pos < trace.length):
        return f"token {pos}"
    piece = trace.pieces[pos]
    if len(piece) > max_chars:
        piece = piece[: max_chars - 1] + "…"
    return f"token {pos} {quote_piece(piece)}"


def outlier_runs(dims: np.ndarray) -> list[tuple[int, int, int]]:
    """(dim, first row, last row) of each run of rows sharing one outlier dimension (-1: no value)."""
    runs, start = [], 0
    for i in range(1, len(dims) + 1):
        if i == len(dims) or dims[i] != dims[start]:
            if dims[start] >= 0:
                runs.append((int(dims[start]), start, i - 1))
            start = i
    return runs


def _run_text(dim: int, first: int, last: int) -> str:
    span = row_name(first) if last == first else f"{row_name(first)}–{row_tick(last)}"
    return f"dim {dim}: {span}"


def outlier_summary(dims: np.ndarray) -> str:
    """Runs of rows sharing one outlier dimension: "dim 588: layer 4–12; dim 12: embed–3" (layers from 0)."""
    return "; ".join(_run_text(*run) for run in outlier_runs(dims))


def outlier_line(dims: np.ndarray, max_runs: int = MAX_RUNS_SHOWN) -> str:
    """outlier_summary cut to its `max_runs` longest runs (in layer order) and how many more there are:
    a model whose outlier dimension changes at every layer must not push the plot off the panel."""
    runs = outlier_runs(dims)
    if len(runs) <= max_runs + 1:  # "and 1 more" would take the room of that one
        return "; ".join(_run_text(*run) for run in runs)
    longest = sorted(sorted(runs, key=lambda r: r[1] - r[2])[:max_runs], key=lambda r: r[1])
    return "; ".join(_run_text(*run) for run in longest) + f"; and {len(runs) - max_runs} more (hover to see all)"


class HiddenView(QWidget):
    position_selected = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._trace: RunTrace | None = None
        self._pos: int | None = None
        self._plot_key: tuple | None = None  # what the line plot shows now

        self.stats = StatBox(STATS, tip="Statistic of the hidden state (the residual stream) over its dimensions")
        self.stats.changed.connect(self._on_stat_changed)
        bar = QHBoxLayout()
        bar.addWidget(self.stats)
        bar.addStretch(1)

        self.heatmap = Heatmap(Axis("layer", row_tick, row_name, first_apart=True), Axis("token"), robust=True,
                               hint="Hover a cell to read its value; click a column to select that token.")
        self.heatmap.cell_clicked.connect(lambda _row, col: self.position_selected.emit(col))

        self.plot, self._x_axis = layer_plot()
        self.plot.getPlotItem().getViewBox().setDefaultPadding(0.12)  # headroom for the dim labels
        # Labels are placed in pixels: place them again whenever the plot's size or range changes.
        self.plot.getPlotItem().getViewBox().sigResized.connect(self._place_dim_labels)
        self.plot.getPlotItem().getViewBox().sigRangeChanged.connect(self._place_dim_labels)
        self.curve = self.plot.plot([], [], connect="finite")
        self.points = pg.ScatterPlotItem(size=7, hoverable=True, tip=self._tip)
        self.plot.addItem(self.points)
        self._dim_labels: list[pg.TextItem] = []  # the labels shown now
        # Labels are made once and reused: making and adding scene items on every range change cost
        # ~12 ms a time and set off one more repaint of the plot each.
        self._label_pool: list[pg.TextItem] = []
        self._labels_key: tuple | None = None  # what the labels were placed for
        self.dims = np.zeros(0, np.int64)
        self.outliers = QLabel()
        self.outliers.setWordWrap(True)
        self.outliers.setTextFormat(Qt.TextFormat.PlainText)
        # Always two lines high, the text fitted to them: a line that appeared or wrapped anew with a fed
        # token would shrink the plot and redraw it all again, mid-run.
        self.outliers.setFixedHeight(OUTLIER_LINES * self.outliers.fontMetrics().lineSpacing() + 2)
        self.outliers.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.outliers.installEventFilter(self)  # fitted again when its width changes
        self.plot.setMinimumHeight(PLOT_MIN_HEIGHT)
        self.title = FittedTitle(self.plot)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.plot, 1)
        rl.addWidget(self.outliers)
        split = splitter(Qt.Orientation.Horizontal, (self.heatmap, 3), (right, 2))

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(split, 1)
        follow_palette(self, self._apply_palette)
        self._apply_palette()

    # --- inputs --------------------------------------------------------------------------------

    def set_trace(self, trace: RunTrace | None) -> None:
        self._trace = trace
        self.heatmap.set_axes(Axis("layer", row_tick, row_name, first_apart=True),
                              Axis("token", name=lambda c: token_name(self._trace, c)))
        self.refresh()

    def set_position(self, pos: int | None) -> None:
        self._pos = pos
        self.heatmap.set_highlight(col=pos)
        self._update_plot(force=True)

    def refresh(self, force: bool = False) -> None:
        """Re-read the trace (it may have grown); `force` redraws the per-layer plot too."""
        if self._trace is None:
            self.heatmap.clear()
        else:
            self.heatmap.set_data(self._trace.hidden(self.stats.stat))
        self.heatmap.set_highlight(col=self._pos)
        self._update_plot(force)

    def _on_stat_changed(self) -> None:
        self.heatmap.set_colorbar_label(self.stats.label())
        self.plot.setLabel("left", self.stats.label())
        self._plot_key = None
        self.refresh()

    # --- per-layer plot ------------------------------------------------------------------------

    def _update_plot(self, force: bool = False) -> None:
        t, pos = self._trace, self._pos
        # A position's values only change when it is first fed: skip the redraw on other refreshes.
        valid = t is not None and pos is not None and 0 <= pos < t.length
        fed = valid and bool(np.isfinite(t.hidden(self.stats.stat)[:, pos]).any())
        key = (id(t), pos, self.stats.stat, fed)
        if key == self._plot_key and not force:
            return
        self._plot_key = key
        self._hide_dim_labels()
        if t is None or pos is None or not (0 <= pos < t.length):
            self.curve.setData([], [])
            self.points.setData([], [])
            self.dims = np.zeros(0, np.int64)
            self.title.set("Select a token")
            self.outliers.setText("")
            self.outliers.setToolTip("")
            return
        y = t.hidden(self.stats.stat)[:, pos].astype(np.float64)
        self.dims = t.hidden("argmax")[:, pos]
        x = np.arange(len(y), dtype=np.float64)
        self._x_axis.count = len(y)
        self.plot.setXRange(-0.5, len(y) - 0.5, padding=0.02)
        self.curve.setData(x, y)
        ok = np.isfinite(y)
        self.points.setData(x[ok], y[ok], data=[int(d) for d in self.dims[ok]], brush=self._point_brush)
        self.title.set(f"{self.stats.label()} at {token_name(t, pos)}")
        if not ok.any():
            self.title.set(f"{token_name(t, pos)}: not fed to the model yet")
            self.outliers.setText("")
            self.outliers.setToolTip("")
            return
        self._fit_outlier_line()
        self.outliers.setToolTip(plain_tip("Hidden dimension with the largest |x| at each layer (OPT's outlier "
                                           "dimensions):\n" + outlier_summary(self.dims).replace("; ", "\n")))
        self._place_dim_labels()

    def _hide_dim_labels(self) -> None:
        for item in self._dim_labels:
            item.setVisible(False)
        self._dim_labels.clear()
        self._labels_key = None

    def _label(self, index: int, text: str) -> pg.TextItem:
        """The pool's `index`-th label showing `text` (made and added to the plot the first time)."""
        if index == len(self._label_pool):
            label = pg.TextItem("", anchor=(0, 0))
            label.textItem.document().setDocumentMargin(1)  # the default 4 pixels of padding crowd the plot
            label.setVisible(False)  # until a place is found for it
            self.plot.addItem(label, ignoreBounds=True)  # labels must not move the range they sit in
            self._label_pool.append(label)
        label = self._label_pool[index]
        label.setText(text, color=self.palette().color(QPalette.ColorRole.Text))
        return label

    def _place_dim_labels(self) -> None:
        """Label each point where the outlier dimension changes, inside the plot, no two overlapping."""
        x, y = self.curve.getData()
        vb = self.plot.getPlotItem().getViewBox()
        area = vb.sceneBoundingRect().adjusted(1, 1, -1, -1)  # a pixel in: rounding never puts a label on the edge
        key = (self._plot_key, area.getRect(), tuple(map(tuple, vb.viewRange())))
        if key == self._labels_key:
            return  # a range or size signal that moved nothing
        self._hide_dim_labels()
        if x is None or not len(x) or len(self.dims) != len(x):
            return
        if area.width() < 2 or area.height() < 2:
            return  # not laid out yet: sigResized places them
        self._labels_key = key
        radius = self.points.opts["size"] / 2
        # The points themselves are taken: a label never hides one.
        taken: list[QRectF] = []
        for xi, yi in zip(x, y):
            if np.isfinite(yi):
                at = vb.mapViewToScene(QPointF(float(xi), float(yi)))
                taken.append(QRectF(at.x() - radius, at.y() - radius, 2 * radius, 2 * radius))
        previous = None
        for xi, yi, d in zip(x, y, self.dims):
            if not np.isfinite(yi):
                continue
            d = int(d)
            if d == previous:
                continue
            previous = d
            label = self._label(len(self._dim_labels), str(d))
            size = label.boundingRect().size()
            w, h = size.width(), size.height()
            at = vb.mapViewToScene(QPointF(float(xi), float(yi)))
            left = min(max(at.x() - w / 2, area.left()), area.right() - w)
            gap = radius + LABEL_GAP
            candidates = (QRectF(left, at.y() - gap - h, w, h),  # above, then below, then beside
                          QRectF(left, at.y() + gap, w, h),
                          QRectF(at.x() - gap - w, at.y() - h / 2, w, h),
                          QRectF(at.x() + gap, at.y() - h / 2, w, h))
            for rect in candidates:
                if area.contains(rect) and not any(rect.intersects(r) for r in taken):
                    taken.append(rect)
                    label.setPos(vb.mapSceneToView(rect.topLeft()))
                    label.setVisible(True)
                    self._dim_labels.append(label)
                    break

    def _fit_outlier_line(self) -> None:
        """Name as many outlier runs under the plot as its two lines hold (the tooltip has them all)."""
        if not len(self.dims) or not (self.dims >= 0).any():
            return
        metrics, width = self.outliers.fontMetrics(), max(self.outliers.width(), 1)
        flags = int(Qt.TextFlag.TextWordWrap)
        for runs in range(MAX_RUNS_SHOWN, 0, -1):
            text = OUTLIER_PREFIX + outlier_line(self.dims, runs)
            if metrics.boundingRect(0, 0, width, 10**6, flags, text).height() <= self.outliers.height():
                break
        else:
            text = OUTLIER_PREFIX + "hover here to see them"  # too narrow to name even one
        self.outliers.setText(text)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        if watched is self.outliers and event.type() == QEvent.Type.Resize and self.outliers.text():
            self._fit_outlier_line()
        return False

    def dim_label_rects(self) -> list[QRectF]:
        """Where the outlier-dimension labels are drawn, in scene coordinates (for checks)."""
        return [item.sceneBoundingRect() for item in self._dim_labels]

    def _tip(self, x: float, y: float, data) -> str:
        return f"{row_name(int(round(x)))}: {y:.4g}\noutlier dim {data}"

    # --- palette -------------------------------------------------------------------------------

    def _apply_palette(self) -> None:
        palette = self.palette()
        style_plot(self.plot, palette)
        accent = palette.color(QPalette.ColorRole.Highlight)
        self.curve.setPen(pg.mkPen(accent, width=2))
        self._point_brush = pg.mkBrush(accent)
        self.points.setPen(pg.mkPen(palette.color(QPalette.ColorRole.Base)))
        self.points.setBrush(self._point_brush)
        self._on_stat_changed()
