"""Information-flow routes as text: the CLI's JSON object and its short table of the strongest routes."""

from __future__ import annotations

import json
from typing import Sequence

from ..engine.messages.results import Routes
from .route_graph import DEFAULT_THRESHOLD, Route, RouteGraph


def routes_json(result: Routes) -> str:
    """One JSON object: tokens (ids), attn [L][T][T][H] ([layer][query][key][head]), attn_residual,
    mlp, mlp_residual [L][T]. Every value is a finite share, so the arrays go out as they are."""
    return json.dumps({"tokens": result.token_ids.tolist(), "attn": result.attn.tolist(),
                       "attn_residual": result.attn_residual.tolist(), "mlp": result.mlp.tolist(),
                       "mlp_residual": result.mlp_residual.tolist()}, allow_nan=False)


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
    flow = graph.trace(position, threshold).flow[0]
    order = [int(i) for i in flow.argsort()[::-1] if flow[i] > 0][:k]
    lines.append("input tokens by the share of its information that comes from them: "
                 + ", ".join(f"{i} {pieces[i]!r} {flow[i]:.0%}" for i in order))
    return lines
