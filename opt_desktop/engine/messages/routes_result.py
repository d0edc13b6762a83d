"""Information-flow routes of one sequence as plain numpy: a bounded form for the window, the pipe and
the file, and the full per-head array only when asked for (the CLI's JSON).

The full result is attn[l][t][s][h], what head h of layer l wrote into query t from key s ≤ t as a share
of t's attention-block sum: L·T²·H numbers (6.4 GB in float32 for opt-350m at 2,048 tokens). What is
kept instead:

- `edges`: Σ_h attn[l][t][s][h] exactly (what the routes graph draws), the lower triangle row by row,
  entry t(t+1)/2 + s being (t, s): L·T(T+1)/2 numbers;
- per node (l, t), its heads' parts of at least `epsilon` of the node's sum (the largest
  MAX_HEAD_PARTS when more reach it; the shares of one sum add up to 1, so at most 1/epsilon can),
  with their count per node: what hovering an edge names. An edge's share that no kept part accounts
  for is known: the edge minus the kept parts on it (minus the residual on the diagonal).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

EPSILON = 1e-3  # a head's part of a node's sum smaller than this is not kept one by one
MAX_HEAD_PARTS = 256  # per node, whatever epsilon lets through: the result's size has a hard bound


def packed_size(n_positions: int) -> int:
    """Entries of a packed lower triangle (the diagonal included)."""
    return n_positions * (n_positions + 1) // 2


def row_starts(n_positions: int) -> np.ndarray:
    """(T + 1,) int64: where row t of a packed lower triangle begins (the last entry: its size)."""
    t = np.arange(n_positions + 1, dtype=np.int64)
    return t * (t + 1) // 2


def pack_rows(square: np.ndarray, out: np.ndarray) -> None:
    """Write the lower triangle of (T, T) `square` into `out` (T(T+1)/2,), row by row (no index arrays:
    at 2,048 positions those would be larger than the triangle)."""
    at = 0
    for t in range(square.shape[0]):
        out[at:at + t + 1] = square[t, :t + 1]
        at += t + 1


def unpack_rows(packed: np.ndarray, n_positions: int, dtype=np.float32) -> np.ndarray:
    """(T(T+1)/2,) -> (T, T), zeros above the diagonal."""
    out = np.zeros((n_positions, n_positions), dtype)
    at = 0
    for t in range(n_positions):
        out[t, :t + 1] = packed[at:at + t + 1]
        at += t + 1
    return out


def select_heads(node: np.ndarray, keys: np.ndarray, shares: np.ndarray, n_nodes: int,
                 epsilon: float = EPSILON, limit: int = MAX_HEAD_PARTS):
    """Of candidate parts (their node, key s·H + h, share of the node's sum), those of at least `epsilon`,
    the `limit` largest of each node: (counts (n_nodes,) int32, keys int32, shares float32), node by node,
    keys ascending within a node."""
    keep = shares >= epsilon
    node, keys, shares = node[keep], keys[keep], shares[keep]
    by_size = np.lexsort((-shares, node))  # node by node, the largest first
    grouped = node[by_size]
    rank = np.arange(len(grouped)) - np.searchsorted(grouped, grouped, side="left")
    chosen = by_size[rank < limit]
    chosen = chosen[np.lexsort((keys[chosen], node[chosen]))]
    counts = np.bincount(node[chosen], minlength=n_nodes).astype(np.int32)
    return counts, keys[chosen].astype(np.int32), shares[chosen].astype(np.float32)


@dataclass(frozen=True)
class Routes:
    """Information-flow routes of one sequence (engine/analyses/routes.py has the definition).

    token_ids: (T,) int64, the whole sequence, the leading `</s>` included. For layer l and position t
    (a node), contributions to one sum, each ≥ 0, adding up to 1:
    edges: (L, T(T+1)/2) float32 (float16 as read from a file): Σ_h attn[l][t][s][h], what layer l's
    heads together wrote into t from s ≤ t, packed (entry t(t+1)/2 + s);
    attn_residual: (L, T) float32, the residual entering the attention block;
    mlp / mlp_residual: (L, T) float32, the MLP's output and the residual entering the MLP;
    head_counts: (L, T) int32, how many of the node's head parts are kept; head_keys: (N,) int32, s·H + h
    of each, node by node (layer, then position), ascending within a node; head_shares: (N,) its share
    of the node's sum (float32; float16 as read from a file);
    attn: (L, T, T, H) float32, [layer][query][key][head], every part: only when asked for (dense).
    """

    token_ids: np.ndarray
    n_heads: int
    edges: np.ndarray
    attn_residual: np.ndarray
    mlp: np.ndarray
    mlp_residual: np.ndarray
    head_counts: np.ndarray
    head_keys: np.ndarray
    head_shares: np.ndarray
    epsilon: float = EPSILON
    attn: np.ndarray | None = None

    @property
    def n_layers(self) -> int:
        return int(self.attn_residual.shape[0])

    @property
    def n_positions(self) -> int:
        return int(self.token_ids.shape[0])

    @cached_property
    def _head_starts(self) -> np.ndarray:
        starts = np.zeros(self.head_counts.size + 1, np.int64)
        np.cumsum(self.head_counts.ravel(), out=starts[1:])
        return starts

    def edge_matrix(self, layer: int) -> np.ndarray:
        """(T, T) float32 [target][source]: layer `layer`'s edges (heads only), zeros above the diagonal."""
        return unpack_rows(self.edges[layer], self.n_positions)

    def node_heads(self, layer: int, position: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys s, heads h, shares) of the kept head parts of node (layer, position)."""
        i = layer * self.n_positions + position
        a, b = self._head_starts[i], self._head_starts[i + 1]
        keys = self.head_keys[a:b]
        return keys // self.n_heads, keys % self.n_heads, self.head_shares[a:b].astype(np.float32)

    @classmethod
    def assemble(cls, token_ids, n_heads: int, edges: np.ndarray, attn_residual: np.ndarray, mlp: np.ndarray,
                 mlp_residual: np.ndarray, heads: list, *, epsilon: float = EPSILON,
                 attn: np.ndarray | None = None) -> "Routes":
        """Routes from each layer's (counts, keys, shares) of `select_heads`, in `heads`."""
        T = len(token_ids)
        return cls(token_ids=np.asarray(token_ids, np.int64), n_heads=int(n_heads), edges=edges,
                   attn_residual=np.asarray(attn_residual, np.float32), mlp=np.asarray(mlp, np.float32),
                   mlp_residual=np.asarray(mlp_residual, np.float32),
                   head_counts=np.stack([c for c, _, _ in heads]) if heads else np.zeros((0, T), np.int32),
                   head_keys=np.concatenate([k for _, k, _ in heads]) if heads else np.zeros(0, np.int32),
                   head_shares=np.concatenate([v for _, _, v in heads]) if heads else np.zeros(0, np.float32),
                   epsilon=float(epsilon), attn=attn)

    @classmethod
    def from_dense(cls, token_ids, attn: np.ndarray, attn_residual: np.ndarray, mlp: np.ndarray,
                   mlp_residual: np.ndarray, *, keep_dense: bool = False, epsilon: float = EPSILON) -> "Routes":
        """The bounded form of the full (L, T, T, H) `attn` (kept too with `keep_dense`)."""
        L, T, _, H = attn.shape
        edges = np.empty((L, packed_size(T)), np.float32)
        heads = []
        for l in range(L):
            pack_rows(attn[l].sum(axis=-1, dtype=np.float32), edges[l])
            t, s, h = np.nonzero(attn[l] >= epsilon)
            heads.append(select_heads(t, s * H + h, attn[l, t, s, h].astype(np.float32), T, epsilon))
        return cls.assemble(token_ids, H, edges, attn_residual, mlp, mlp_residual, heads, epsilon=epsilon,
                            attn=np.asarray(attn, np.float32) if keep_dense else None)
