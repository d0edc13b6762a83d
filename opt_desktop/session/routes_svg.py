"""The routes into the last token as an inline SVG for the HTML report (no script, text escaped).

Positions run left to right with their token under each column, rows from the embeddings at the
bottom to the last layer at the top; only the edges on a route into the last position's last layer
are drawn, as wide and as dark as their renormalised weight, each with a tooltip naming its heads.
A node's square is its MLP's share of the node.
"""

from __future__ import annotations

import html

import numpy as np

from .route_graph import DEFAULT_THRESHOLD, RouteGraph, stored_routes
from .trace import RunTrace

_ROW, _TOP, _LEFT, _LABELS = 26, 14, 46, 90  # pixels: row height, top margin, left margin, token-label band
_EDGE, _NODE = "#3563b5", "#888"


def _column(T: int) -> float:
    return max(12.0, min(48.0, 900.0 / max(1, T)))


def routes_svg(graph: RouteGraph, pieces, position: int, threshold: float = DEFAULT_THRESHOLD) -> str:
    L, T = graph.n_layers, graph.n_positions
    col = _column(T)
    width, height = _LEFT + col * T + 10, _TOP + _ROW * L + _LABELS

    def x(t: int) -> float:
        return _LEFT + col * (t + 0.5)

    def y(row: int) -> float:
        return _TOP + _ROW * (L - row)

    traced = graph.trace(position, threshold)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" font-family="sans-serif" font-size="10">']
    for row in range(L + 1):
        name = "embed" if row == 0 else f"L{row - 1}"
        out.append(f'<text x="{_LEFT - 6}" y="{y(row) + 3:.1f}" text-anchor="end" fill="#555">{name}</text>')
    for l, s, t, w in traced.edges.tolist():
        l, s, t = int(l), int(s), int(t)
        heads = ", ".join(f"H{h} {share:.0%}" for h, share in graph.heads(l, t, s)[:3])
        tip = html.escape(f"layer {l}: {s} {pieces[s]!r} → {t} {pieces[t]!r}, weight {w:.2f} ({heads})")
        out.append(f'<line x1="{x(s):.1f}" y1="{y(l):.1f}" x2="{x(t):.1f}" y2="{y(l + 1):.1f}" stroke="{_EDGE}" '
                   f'stroke-width="{0.5 + 4.5 * w:.2f}" stroke-opacity="{0.25 + 0.75 * w:.2f}" '
                   f'stroke-linecap="round"><title>{tip}</title></line>')
    rows, columns = np.nonzero(traced.active)
    for row, t in zip(rows.tolist(), columns.tolist()):
        share = graph.node(row, t)
        tip = f"{t} {pieces[t]!r}, " + ("embedding" if share is None else
                                         f"layer {row - 1}: residual {share['residual']:.0%}, attention "
                                         f"{share['attention']:.0%}, MLP {share['mlp']:.0%}")
        out.append(f'<circle cx="{x(t):.1f}" cy="{y(row):.1f}" r="3" fill="{_NODE}"><title>{html.escape(tip)}'
                   f'</title></circle>')
        if share is not None:
            out.append(f'<rect x="{x(t) + 4:.1f}" y="{y(row) - 3:.1f}" width="5" height="5" fill="#c0392b" '
                       f'fill-opacity="{share["mlp"]:.2f}"/>')
    base = _TOP + _ROW * L + 8
    for t in range(T):
        weight = "bold" if t == position else "normal"
        out.append(f'<text transform="translate({x(t) + 3:.1f},{base}) rotate(-60)" text-anchor="end" '
                   f'font-weight="{weight}">{html.escape(repr(pieces[t])[1:-1])}</text>')
    out.append("</svg>")
    return "".join(out)


def routes_section(trace: RunTrace) -> list[str]:
    """The report's part for a run with routes: the graph into its last token, else nothing."""
    result = stored_routes(trace)
    if result is None:
        return []
    graph = RouteGraph(result)
    last = graph.n_positions - 1
    piece = html.escape(repr(trace.pieces[last]))
    return [f"<h3>Information-flow routes into the last token, {piece} (position {last})</h3>",
            f"<p class='legend'>Where its last layer's state (which predicts the next token) took its information "
            f"from, layer by layer: each line is what one layer's attention moved from one position to another, "
            f"as wide as its share; edges under {DEFAULT_THRESHOLD:g} are hidden and the rest renormalised. A red "
            "square is the MLP's share of a node. Hover over a line for its heads.</p>",
            f"<div class='routes'>{routes_svg(graph, trace.pieces, last)}</div>"]
