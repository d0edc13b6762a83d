"""Information-flow routes as text: the CLI's JSON object and its short table of the strongest routes."""

from __future__ import annotations

import json
from typing import Sequence, TextIO

from ..engine.messages.results import Routes
from .route_graph import DEFAULT_THRESHOLD, Route, RouteGraph


def write_routes_json(result: Routes, out: TextIO) -> None:
    """One JSON object: tokens (ids), attn [L][T][T][H] ([layer][query][key][head]), attn_residual,
    mlp, mlp_residual [L][T], for routes computed with every part (`dense`). Every value is a finite
    share, so the arrays go out as they are, a query's row at a time (the text is some 5 times the
    array: it is never held whole)."""
    if result.attn is None:
        raise ValueError("these routes were computed without every part (ask for dense routes)")

    def dump(value) -> str:
        return json.dumps(value, allow_nan=False)

    out.write(f'{{"tokens": {dump(result.token_ids.tolist())}, "attn": [')
    for l, layer in enumerate(result.attn):
        out.write(", [" if l else "[")
        for t, row in enumerate(layer):
            out.write((", " if t else "") + dump(row.tolist()))
        out.write("]")
    out.write(f'], "attn_residual": {dump(result.attn_residual.tolist())}, "mlp": {dump(result.mlp.tolist())}, '
              f'"mlp_residual": {dump(result.mlp_residual.tolist())}}}\n')


def route_text(route: Route, pieces: Sequence[str], top_heads: int = 2) -> str:
    """'3 ' cat' ─L4 (H7 80%, H2 15%)→ 9 ' sat' ─…' from the input token to the chosen one."""
    start = route.positions[0]
    parts = [f"{start} {pieces[start]!r}"]
    for hop in route.hops:
        heads = ", ".join(f"H{h} {share:.0%}" for h, share in hop.heads[:top_heads])
        parts.append(f"─L{hop.layer} ({heads})→ {hop.target} {pieces[hop.target]!r}")
    if not route.hops:
        parts.append("(its own position, through every layer)")
    return " ".join(parts)


def strongest_table(result: Routes, pieces: Sequence[str], position: int | None = None,
                    threshold: float = DEFAULT_THRESHOLD, k: int = 8) -> list[str]:
    """Lines of a short table: the k strongest routes into `position`'s last layer (default: the last
    token), with what the input tokens give it in all."""
    graph = RouteGraph(result)
    position = graph.n_positions - 1 if position is None else position
    lines = [f"routes into position {position} {pieces[position]!r} at its last layer (what predicts the next "
             f"token), edges under {threshold:g} hidden and the rest renormalised:",
             f"{'weight':>7}  route (input token ─layer (heads)→ position …)"]
    for route in graph.strongest(position, threshold, k):
        lines.append(f"{route.weight:>7.3f}  {route_text(route, pieces)}")
    lines.append("input tokens by the share of its information that comes from them: "
                 + ", ".join(f"{i} {pieces[i]!r} {share:.0%}" for i, share in graph.trace(position, threshold).inputs(k)))
    return lines
