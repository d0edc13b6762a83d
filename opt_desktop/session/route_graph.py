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
from ..engine.messages.routes_result import row_starts, unpack_rows
from .analyses import ROUTES, routes_analysis, routes_from
from .trace import RunTrace

DEFAULT_THRESHOLD = 0.04  # the paper's and the LLM Transparency Tool's default


def stored_routes(trace: RunTrace) -> Routes | None:
    """The routes kept with a run (its latest), or None."""
    for analysis in reversed(trace.analyses):
        if analysis.kind == ROUTES:
            return routes_from(analysis, trace.token_ids, trace.n_heads)
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

    def inputs(self, k: int) -> list[tuple[int, float]]:
        """The (at most) k input tokens that give the top node the most of its information: (position,
        share), largest first."""
        flow = self.flow[0]
        return [(int(i), float(flow[i])) for i in np.argsort(-flow, kind="stable")[:k] if flow[i] > 0]


class Kept:
    """The edges of every layer at or above a threshold, renormalised so each node's add up to 1 (a node
    none of whose edges reach it keeps none), as sparse rows: for layer l, the edges into position t are
    sources[l][starts[l][t]:starts[l][t + 1]] with weights[l][…] (sources ascending)."""

    def __init__(self, threshold: float, starts: list[np.ndarray], sources: list[np.ndarray],
                 weights: list[np.ndarray]):
        self.threshold, self.starts, self.sources, self.weights = threshold, starts, sources, weights

    def row(self, layer: int, target: int) -> tuple[np.ndarray, np.ndarray]:
        """(sources, renormalised weights) of the edges into (layer + 1, target)."""
        a, b = self.starts[layer][target], self.starts[layer][target + 1]
        return self.sources[layer][a:b], self.weights[layer][a:b]

    def weight(self, layer: int, target: int, source: int) -> float:
        sources, weights = self.row(layer, target)
        i = int(np.searchsorted(sources, source))
        return float(weights[i]) if i < len(sources) and sources[i] == source else 0.0

    def targets(self, layer: int) -> np.ndarray:
        """The target of each kept edge of `layer`, in the order of its sources and weights."""
        return np.repeat(np.arange(len(self.starts[layer]) - 1), np.diff(self.starts[layer]))

    def segments(self) -> np.ndarray:
        """(n, 4): layer, source, target, weight of every kept edge."""
        parts = [np.stack([np.full(len(self.sources[l]), l), self.sources[l], self.targets(l), self.weights[l]], axis=1)
                 for l in range(len(self.sources))]
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, 4))

    def matrix(self, layer: int) -> np.ndarray:
        """(T, T) [target][source] of one layer (for tests and small runs)."""
        T = len(self.starts[layer]) - 1
        out = np.zeros((T, T))
        out[self.targets(layer), self.sources[layer]] = self.weights[layer]
        return out


class RouteGraph:
    def __init__(self, routes: Routes):
        self.routes = routes
        self.n_layers, self.n_positions, self.n_heads = routes.n_layers, routes.n_positions, routes.n_heads
        self._starts = row_starts(self.n_positions)
        self._diagonal = self._starts[1:] - 1  # entry (t, t) of the packed rows
        self._kept: Kept | None = None

    def edge_row(self, layer: int) -> np.ndarray:
        """(T(T+1)/2,) float32: layer `layer`'s edges, packed [target][source ≤ target]: each node's heads
        from each source, plus the residual's on the diagonal (so each node's add up to 1)."""
        row = self.routes.edges[layer].astype(np.float32)
        row[self._diagonal] += self.routes.attn_residual[layer]
        return row

    def edge(self, layer: int, target: int, source: int) -> float:
        """The edge from (layer, source) to (layer + 1, target), before renormalising."""
        value = float(self.routes.edges[layer, self._starts[target] + source])
        return value + float(self.routes.attn_residual[layer, target]) if source == target else value

    def edge_matrix(self, layer: int) -> np.ndarray:
        """(T, T) [target][source] of one layer's edges (for tests and small runs)."""
        return unpack_rows(self.edge_row(layer), self.n_positions)

    def kept(self, threshold: float) -> Kept:
        """The edges at or above `threshold`, renormalised per node."""
        if self._kept is not None and self._kept.threshold == threshold:
            return self._kept
        T, starts_all = self.n_positions, self._starts
        starts, sources, weights = [], [], []
        for l in range(self.n_layers):
            row = self.edge_row(l)
            at = np.flatnonzero(row >= threshold)
            target = np.searchsorted(starts_all, at, side="right") - 1
            w = row[at].astype(np.float64)
            total = np.bincount(target, weights=w, minlength=T)
            starts.append(np.searchsorted(target, np.arange(T + 1)))
            sources.append(at - starts_all[target])
            weights.append(w / total[target])
        self._kept = Kept(threshold, starts, sources, weights)
        return self._kept

    def trace(self, position: int, threshold: float = DEFAULT_THRESHOLD) -> Traced:
        L, T = self.n_layers, self.n_positions
        kept = self.kept(threshold)
        active = np.zeros((L + 1, T), bool)
        flow = np.zeros((L + 1, T))
        active[L, position], flow[L, position] = True, 1.0
        found = []
        for l in reversed(range(L)):
            targets, sources, weights = kept.targets(l), kept.sources[l], kept.weights[l]
            on = active[l + 1][targets]  # edges into active nodes only
            found.append(np.stack([np.full(int(on.sum()), l), sources[on], targets[on], weights[on]], axis=1))
            active[l, sources[on]] = True
            flow[l] = np.bincount(sources, weights=flow[l + 1][targets] * weights, minlength=T)
        edges = np.concatenate(found) if found else np.zeros((0, 4))
        return Traced(position, threshold, active, flow, edges)

    def heads(self, layer: int, target: int, source: int) -> tuple[tuple[int, float], ...]:
        """(head, share of the edge) of the kept heads that carry the edge, largest first (shares of the
        edge's unrenormalised weight). What they leave is the residual's (for source = target) and that
        of parts each under epsilon of the node: `rest`."""
        total = self.edge(layer, target, source)
        if total <= 0:
            return ()
        keys, heads, shares = self.routes.node_heads(layer, target)
        on = keys == source
        heads, shares = heads[on], shares[on].astype(np.float64)
        order = np.argsort(-shares, kind="stable")
        return tuple((int(heads[i]), float(shares[i] / total)) for i in order)

    def rest(self, layer: int, target: int, source: int) -> tuple[float, float]:
        """(the residual's share of the edge, the share of the heads' parts not kept one by one)."""
        total = self.edge(layer, target, source)
        if total <= 0:
            return 0.0, 0.0
        residual = float(self.routes.attn_residual[layer, target]) / total if source == target else 0.0
        named = sum(share for _, share in self.heads(layer, target, source))
        return residual, max(0.0, 1.0 - residual - named)

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
                sources, weights = kept.row(l, t)
                for s, w in zip(sources.tolist(), weights.tolist()):
                    grown.setdefault(s, []).extend((pw * w, (s,) + path) for pw, path in paths)
            best = {s: heapq.nlargest(k, paths) for s, paths in grown.items()}
        found = heapq.nlargest(k, (p for paths in best.values() for p in paths))
        return [self._route(positions, weight, kept) for weight, positions in found]

    def _route(self, positions: tuple[int, ...], weight: float, kept: Kept) -> Route:
        hops = tuple(Hop(l, s, t, kept.weight(l, t, s), self.heads(l, t, s))
                     for l, (s, t) in enumerate(zip(positions, positions[1:])) if s != t)
        return Route(positions, weight, hops)
