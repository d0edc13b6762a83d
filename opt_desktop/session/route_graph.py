"""The information-flow routes of a run as a graph: what the Routes view draws, the HTML report shows
and the CLI prints; and the routes kept with a run.

Nodes are (row, position): row 0 is the embeddings, row l + 1 the output of layer l. The edge from
(l, s) to (l + 1, t) is what layer l's attention block took from position s into position t: the
sum over heads of their contributions, plus, for s = t, the residual's. Each node's incoming edges
therefore add up to 1. A threshold hides the edges under it and the rest are renormalised per node
(Ferrando & Voita 2024); the routes to a token are the edges reached going down from its top node.
The MLP reads only its own position, so it adds no edge: its share is a mark on the node.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from ..engine.messages.results import Routes
from .analyses import ROUTES, routes_analysis, routes_from
from .trace import RunTrace

DEFAULT_THRESHOLD = 0.04  # the paper's and the LLM Transparency Tool's default


def stored_routes(trace: RunTrace) -> Routes | None:
    """The routes kept with a run (its latest), or None."""
    for analysis in reversed(trace.analyses):
        if analysis.kind == ROUTES:
            return routes_from(analysis, trace.token_ids)
    return None


def keep_routes(trace: RunTrace, result: Routes) -> None:
    """Keep `result` with the run it was computed on, in place of any earlier routes."""
    if result.token_ids.tolist() != list(trace.token_ids):
        raise ValueError("routes are kept with the run whose tokens they were computed on")
    trace.analyses = [a for a in trace.analyses if a.kind != ROUTES] + [routes_analysis(result)]


@dataclass(frozen=True)
class Hop:
    """One step of a route between two positions: layer `layer` moved information from `source` to `target`."""

    layer: int
    source: int
    target: int
    weight: float  # the renormalised edge weight
    heads: tuple[tuple[int, float], ...]  # (head, share of the edge), largest first


@dataclass(frozen=True)
class Route:
    """A path from an input token (row 0) to the chosen token's top node, one position per row."""

    positions: tuple[int, ...]  # L + 1 positions, row 0 first
    weight: float  # the product of its renormalised edge weights
    hops: tuple[Hop, ...]  # where it changes position, lowest layer first


@dataclass(frozen=True)
class Traced:
    """The routes into the top node of `position`, at `threshold`."""

    position: int
    threshold: float
    active: np.ndarray  # (L + 1, T) bool: nodes on some route
    flow: np.ndarray  # (L + 1, T): the share of the top node's information that passes through each node
    edges: np.ndarray  # (n, 4): layer, source, target, renormalised weight, of the edges on some route


class RouteGraph:
    def __init__(self, routes: Routes):
        self.routes = routes
        self.n_layers, self.n_positions, self.n_heads = routes.n_layers, routes.n_positions, routes.n_heads
        edges = routes.attn.sum(axis=-1, dtype=np.float64)
        diagonal = np.arange(self.n_positions)
        edges[:, diagonal, diagonal] += routes.attn_residual
        self.edges = edges.astype(np.float32)  # (L, T, T) [layer][target][source]
        self._kept: tuple[float, np.ndarray] | None = None

    def kept(self, threshold: float) -> np.ndarray:
        """(L, T, T) the edges at or above `threshold`, renormalised so each node's add up to 1
        (a node none of whose edges reach the threshold keeps none)."""
        if self._kept is not None and self._kept[0] == threshold:
            return self._kept[1]
        w = np.where(self.edges >= threshold, self.edges, np.float32(0))
        total = w.sum(axis=-1, keepdims=True)
        kept = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
        self._kept = (threshold, kept)
        return kept

    def trace(self, position: int, threshold: float = DEFAULT_THRESHOLD) -> Traced:
        L, T = self.n_layers, self.n_positions
        kept = self.kept(threshold)
        active = np.zeros((L + 1, T), bool)
        flow = np.zeros((L + 1, T))
        active[L, position], flow[L, position] = True, 1.0
        found = []
        for l in reversed(range(L)):
            on = kept[l] * active[l + 1][:, None]  # edges into active nodes only
            targets, sources = np.nonzero(on)
            found.append(np.stack([np.full(len(targets), l), sources, targets, on[targets, sources]], axis=1))
            active[l] = on.any(axis=0)
            flow[l] = flow[l + 1] @ kept[l]
        edges = np.concatenate(found) if found else np.zeros((0, 4))
        return Traced(position, threshold, active, flow, edges)

    def heads(self, layer: int, target: int, source: int) -> tuple[tuple[int, float], ...]:
        """(head, share of the edge) of the heads that carry the edge, largest first (shares of the
        edge's unrenormalised weight; for source = target the residual takes the rest)."""
        shares = self.routes.attn[layer, target, source].astype(np.float64)
        total = float(self.edges[layer, target, source])
        if total <= 0:
            return ()
        order = np.argsort(-shares)
        return tuple((int(h), float(shares[h] / total)) for h in order)

    def node(self, row: int, position: int) -> dict[str, float] | None:
        """The shares of a node's sums: None for row 0 (the embeddings)."""
        if row == 0:
            return None
        r, l, t = self.routes, row - 1, position
        return {"residual": float(r.attn_residual[l, t]), "attention": float(1.0 - r.attn_residual[l, t]),
                "mlp": float(r.mlp[l, t]), "mlp_residual": float(r.mlp_residual[l, t])}

    def strongest(self, position: int, threshold: float = DEFAULT_THRESHOLD, k: int = 8) -> list[Route]:
        """The k routes into `position`'s top node with the largest products of renormalised weights."""
        L = self.n_layers
        kept = self.kept(threshold)
        best: dict[int, list[tuple[float, tuple[int, ...]]]] = {position: [(1.0, (position,))]}
        for l in reversed(range(L)):
            grown: dict[int, list[tuple[float, tuple[int, ...]]]] = {}
            for t, paths in best.items():
                for s in np.nonzero(kept[l, t])[0].tolist():
                    w = float(kept[l, t, s])
                    grown.setdefault(s, []).extend((pw * w, (s,) + path) for pw, path in paths)
            best = {s: heapq.nlargest(k, paths) for s, paths in grown.items()}
        found = heapq.nlargest(k, (p for paths in best.values() for p in paths))
        return [self._route(positions, weight, kept) for weight, positions in found]

    def _route(self, positions: tuple[int, ...], weight: float, kept: np.ndarray) -> Route:
        hops = tuple(Hop(l, s, t, float(kept[l, t, s]), self.heads(l, t, s))
                     for l, (s, t) in enumerate(zip(positions, positions[1:])) if s != t)
        return Route(positions, weight, hops)
