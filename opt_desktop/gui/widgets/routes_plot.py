"""The routes graph itself: positions left to right, one row of nodes per layer (embeddings at the
bottom), an edge for each attention route kept at the threshold, an MLP mark on each node.

Edges are drawn in a few weight classes, one pyqtgraph item each (`connect="pairs"`), so thousands
of them cost a handful of items; the person zooms with the wheel and pans by dragging. Hovering
finds the nearest node or edge in screen pixels and describes it; a click picks the nearest column.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor

from ...session.route_graph import RouteGraph, Traced
from .heatmap import IndexAxis, style_plot

# (lowest renormalised weight, pen width, opacity 0-255) of each class of edges between two positions;
# an edge within one position (mostly the residual) is a thin grey line: the eye goes to what moves
CLASSES = ((0.0, 0.8, 70), (0.1, 1.4, 110), (0.25, 2.4, 160), (0.5, 3.6, 210), (0.75, 5.0, 255))
EDGE_RGB, ACTIVE_RGB, MLP_RGB, SELF_RGBA = (53, 99, 181), (53, 99, 181), (192, 57, 43), (120, 120, 120, 140)
NODE_PIXELS, EDGE_PIXELS = 7.0, 5.0  # how near the pointer must be to a node, an edge
OVERVIEW_FADE = 0.45  # the routes into every token at once: light edges fainter still, so the strong ones show


LABEL_CHARS = 8  # a token under its column is cut to this many characters (the hover has it whole)


def _label(piece: str, width: int = LABEL_CHARS) -> str:
    text = repr(piece)[1:-1]
    return text if len(text) <= width else text[:width - 1] + "…"


class TokenAxis(IndexAxis):
    """The tokens under the columns: spaced by the widest label (tokens differ in width, unlike numbers,
    so the first and last are no guide): every token where they all fit, else every 2nd, 5th, 10th …"""

    def __init__(self, orientation: str = "bottom"):
        super().__init__(orientation)
        self._widest: float | None = None

    def forget_widths(self) -> None:
        self._widest = None
        self.picture = None

    def tickValues(self, minVal, maxVal, size):  # noqa: N802 (pyqtgraph's name)
        """IndexAxis's ticks, less a label that would run past the axis's right end: the plot ends there,
        and the label would be cut ("resu" for "result"); the whole token is on hover."""
        ticks = super().tickValues(minVal, maxVal, size)
        if not ticks:
            return ticks
        lo, per_index = min(minVal, maxVal), size / abs(maxVal - minVal)
        return [(step, [v for v in values if (v - lo) * per_index + self._extent(self.label_fn(v)) / 2 <= size])
                for step, values in ticks]

    def _room(self, first: int, last: int) -> float:
        if self._widest is None:
            self._widest = max((self._extent(self.label_fn(i)) for i in range(self.count)), default=0.0)
        return self._widest + self._extent("  ")


class RoutesPlot(pg.PlotWidget):
    hovered = Signal(str)  # what is under the pointer, as plain text ("" for nothing)
    column_clicked = Signal(int)

    def __init__(self, parent=None):
        self._x_axis, self._y_axis = TokenAxis("bottom"), IndexAxis("left")
        super().__init__(parent, axisItems={"bottom": self._x_axis, "left": self._y_axis})
        self._y_axis.first_apart = True
        self._y_axis.label_fn = lambda r: "embed" if r == 0 else f"L{r - 1}"
        item = self.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.getViewBox().setMouseEnabled(x=True, y=True)
        self.edges = [pg.PlotDataItem(connect="pairs", pen=pg.mkPen(QColor(*EDGE_RGB, a), width=w))
                      for _, w, a in CLASSES]
        self.within = pg.PlotDataItem(connect="pairs", pen=pg.mkPen(QColor(*SELF_RGBA), width=2))
        self.nodes = pg.ScatterPlotItem(size=4, pen=None, brush=pg.mkBrush(150, 150, 150, 120))
        self.active = pg.ScatterPlotItem(size=7, pen=None, brush=pg.mkBrush(*ACTIVE_RGB))
        self.mlp = pg.ScatterPlotItem(symbol="s", size=5, pen=None)
        for it in (self.within, *self.edges, self.nodes, self.mlp, self.active):
            self.addItem(it)
        self.graph: RouteGraph | None = None
        self.pieces: list[str] = []
        self._segments = np.zeros((0, 4))  # layer, source, target, weight of the edges drawn
        self.traced: Traced | None = None  # the routes into the chosen token, when one is chosen
        self.scene().sigMouseMoved.connect(self._on_moved)
        self.scene().sigMouseClicked.connect(self._on_clicked)
        style_plot(self, self.palette())

    # --- what to draw ------------------------------------------------------------------------------

    def set_graph(self, graph: RouteGraph | None, pieces: list[str]) -> None:
        self.graph, self.pieces = graph, list(pieces)
        if graph is None:
            for it in (self.within, *self.edges, self.nodes, self.mlp, self.active):
                it.setData([], [])
            self._segments, self.traced = np.zeros((0, 4)), None
            self._x_axis.count = self._y_axis.count = 0
            return
        L, T = graph.n_layers, graph.n_positions
        self._x_axis.count, self._y_axis.count = T, L + 1
        self._x_axis.label_fn = lambda i: _label(self.pieces[i]) if 0 <= i < len(self.pieces) else ""
        self._x_axis.forget_widths()
        self._y_axis.picture = None
        rows, cols = np.meshgrid(np.arange(L + 1), np.arange(T), indexing="ij")
        self.nodes.setData(cols.ravel(), rows.ravel())
        shares = graph.routes.mlp.ravel()  # (L, T): the nodes of rows 1 … L
        brushes = [pg.mkBrush(*MLP_RGB, int(40 + 215 * s)) for s in shares]
        self.mlp.setData(cols[1:].ravel() + 0.22, rows[1:].ravel(), brush=brushes)
        self.getPlotItem().getViewBox().setRange(xRange=(-0.7, T - 0.3), yRange=(-0.5, L + 0.5), padding=0)

    def show_edges(self, threshold: float, position: int | None) -> None:
        """The edges kept at `threshold`: all of them, or only those on a route into `position`."""
        graph = self.graph
        if graph is None:
            return
        if position is None:
            segments = graph.kept(threshold).segments()
            self.traced = None
            self.active.setData([], [])
        else:
            traced = self.traced = graph.trace(position, threshold)
            segments = traced.edges
            rows, cols = np.nonzero(traced.active)
            self.active.setData(cols, rows)
        self._segments = segments
        fade = OVERVIEW_FADE if position is None else 1.0
        for (low, width, alpha), item in zip(CLASSES, self.edges):
            item.setPen(pg.mkPen(QColor(*EDGE_RGB, int(alpha * (fade if low < 0.25 else 1.0))), width=width))
        self.within.setPen(pg.mkPen(QColor(*SELF_RGBA[:3], int(SELF_RGBA[3] * fade)), width=2))
        within = segments[:, 1] == segments[:, 2]
        self._set_pairs(self.within, segments[within])
        across = segments[~within]
        bounds = [c[0] for c in CLASSES[1:]] + [np.inf]
        for (low, _, _), high, item in zip(CLASSES, bounds, self.edges):
            self._set_pairs(item, across[(across[:, 3] >= low) & (across[:, 3] < high)])

    @staticmethod
    def _set_pairs(item, segments: np.ndarray) -> None:
        """Draw (layer, source, target, weight) rows as lines from (source, layer) to (target, layer + 1)."""
        item.setData(np.stack([segments[:, 1], segments[:, 2]], axis=1).ravel(),
                     np.stack([segments[:, 0], segments[:, 0] + 1], axis=1).ravel())

    # --- hover and clicks ----------------------------------------------------------------------------

    def _view_point(self, scene_pos):
        vb = self.getPlotItem().getViewBox()
        if self.graph is None or not vb.sceneBoundingRect().contains(scene_pos):
            return None
        p = vb.mapSceneToView(scene_pos)
        px, py = vb.viewPixelSize()
        return p.x(), p.y(), px, py

    def _on_moved(self, scene_pos) -> None:
        point = self._view_point(scene_pos)
        if point is None and self.graph is not None and self._x_axis.sceneBoundingRect().contains(scene_pos):
            # over the tokens under the columns: the whole token of the nearest one (its label may be cut)
            t = int(round(self.getPlotItem().getViewBox().mapSceneToView(scene_pos).x()))
            self.hovered.emit(self.token_text(t) if 0 <= t < self.graph.n_positions else "")
            return
        self.hovered.emit("" if point is None else self.describe_at(*point))

    def token_text(self, t: int) -> str:
        return f"position {t} {self.pieces[t]!r}: click its column to trace the routes into it."

    def describe_at(self, x: float, y: float, px: float, py: float) -> str:
        """What lies within a few pixels of view point (x, y), pixels being (px, py) view units."""
        graph = self.graph
        L, T = graph.n_layers, graph.n_positions
        t, row = int(round(x)), int(round(y))
        if 0 <= t < T and 0 <= row <= L and np.hypot((x - t) / px, (y - row) / py) <= NODE_PIXELS:
            return self.node_text(row, t)
        seg = self._segments
        if not len(seg):
            return ""
        x0, y0, x1, y1 = seg[:, 1] / px, seg[:, 0] / py, seg[:, 2] / px, (seg[:, 0] + 1) / py
        qx, qy = x / px, y / py
        dx, dy = x1 - x0, y1 - y0
        u = np.clip(((qx - x0) * dx + (qy - y0) * dy) / np.maximum(dx * dx + dy * dy, 1e-12), 0, 1)
        dist = np.hypot(x0 + u * dx - qx, y0 + u * dy - qy)
        i = int(np.argmin(dist))
        if dist[i] > EDGE_PIXELS:
            return ""
        l, s, t, w = seg[i]
        return self.edge_text(int(l), int(s), int(t), float(w))

    def node_text(self, row: int, t: int) -> str:
        where = f"position {t} {self.pieces[t]!r}"
        share = self.graph.node(row, t)
        if share is None:
            text = f"{where}: its embedding"
        else:
            text = (f"{where}, output of layer {row - 1}. Attention block: residual {share['residual']:.0%}, "
                    f"heads {share['attention']:.0%}. MLP block: MLP {share['mlp']:.0%}, residual "
                    f"{share['mlp_residual']:.0%}.")
        if self.traced is not None and self.traced.flow[row, t] > 0:
            text += f" {self.traced.flow[row, t]:.0%} of the chosen token's information passes here."
        return text

    def edge_text(self, layer: int, s: int, t: int, weight: float) -> str:
        graph = self.graph
        raw = graph.edge(layer, t, s)
        heads = graph.heads(layer, t, s)
        named = [(h, share) for h, share in heads[:4] if share >= 0.005]
        residual, _ = graph.rest(layer, t, s)
        others = 1.0 - residual - sum(share for _, share in named)  # smaller heads, and parts under epsilon
        parts = ([f"residual {residual:.0%}"] if s == t else []) + [f"L{layer}H{h} {share:.0%}" for h, share in named]
        if others >= 0.005:
            parts.append(f"other heads {others:.0%}")
        return (f"layer {layer}: {s} {self.pieces[s]!r} → {t} {self.pieces[t]!r}, weight {weight:.2f} "
                f"({raw:.2f} of the sum before renormalising). Carried by {', '.join(parts) or 'no head'}.")

    def _on_clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton or self.graph is None:
            return
        p = self.getPlotItem().getViewBox().mapSceneToView(event.scenePos())
        t = int(round(p.x()))
        if 0 <= t < self.graph.n_positions:
            self.column_clicked.emit(t)

    def changeEvent(self, event) -> None:  # noqa: N802
        super().changeEvent(event)
        # (PlotWidget's own constructor changes the palette before its plot item exists)
        if event.type() == event.Type.PaletteChange and getattr(self, "plotItem", None) is not None:
            style_plot(self, self.palette())
