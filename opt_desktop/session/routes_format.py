"""How information-flow routes are kept in a session file (docs/session-format.md, `routes`).

The bounded form of engine/messages/routes_result.py: each layer's edge sums as a packed lower
triangle and the kept head parts, shares in float16; its `params` say epsilon and how many head parts
there are. Files written before it (params `{}`) hold every part, `attn` (L, T(T+1)/2, H) float16:
they still open, read into the bounded form.
"""

from __future__ import annotations

import math

import numpy as np

from ..engine.messages.routes_result import EPSILON, MAX_HEAD_PARTS, Routes, packed_size, row_starts, select_heads

ROUTES = "routes"
SHARE_SLACK = 1e-3  # float16 rounds a share of 1 to within this
SHARES = ("edges", "attn_residual", "mlp", "mlp_residual", "head_shares")


def routes_params(result: Routes) -> dict:
    return {"epsilon": float(result.epsilon), "head_parts": int(result.head_keys.shape[0])}


def routes_arrays(result: Routes) -> dict[str, np.ndarray]:
    return {"edges": np.ascontiguousarray(result.edges, np.float16),
            "attn_residual": np.ascontiguousarray(result.attn_residual, np.float32),
            "mlp": np.ascontiguousarray(result.mlp, np.float32),
            "mlp_residual": np.ascontiguousarray(result.mlp_residual, np.float32),
            "head_counts": np.ascontiguousarray(result.head_counts, np.int32),
            "head_keys": np.ascontiguousarray(result.head_keys, np.int32),
            "head_shares": np.ascontiguousarray(result.head_shares, np.float16)}


def routes_of(params: dict, arrays: dict[str, np.ndarray], token_ids, n_heads: int) -> Routes:
    if "attn" in arrays:
        return _from_every_part(arrays, token_ids)
    return Routes(token_ids=np.asarray(token_ids, np.int64), n_heads=n_heads, edges=arrays["edges"],
                  attn_residual=arrays["attn_residual"], mlp=arrays["mlp"], mlp_residual=arrays["mlp_residual"],
                  head_counts=arrays["head_counts"], head_keys=arrays["head_keys"],
                  head_shares=arrays["head_shares"], epsilon=float(params["epsilon"]))


def _from_every_part(arrays: dict[str, np.ndarray], token_ids) -> Routes:
    """The bounded form of a file that kept every part (the first routes format)."""
    packed = arrays["attn"]  # (L, T(T+1)/2, H)
    L, P, H = packed.shape
    T = len(token_ids)
    starts = row_starts(T)
    edges = packed.sum(axis=-1, dtype=np.float32)
    heads = []
    for l in range(L):
        p, h = np.nonzero(packed[l] >= EPSILON)
        t = np.searchsorted(starts, p, side="right") - 1
        heads.append(select_heads(t, (p - starts[t]) * H + h, packed[l, p, h].astype(np.float32), T, EPSILON))
    return Routes.assemble(token_ids, H, edges, arrays["attn_residual"], arrays["mlp"], arrays["mlp_residual"], heads)


def expected(params: dict, n_layers: int, n_heads: int, n_positions: int) -> dict[str, tuple[type, tuple[int, ...]]]:
    """The arrays of routes with these `params`; ValueError when the params are not the app's."""
    L, H, T = n_layers, n_heads, n_positions
    P = packed_size(T)
    per_node = {"attn_residual": (np.float32, (L, T)), "mlp": (np.float32, (L, T)), "mlp_residual": (np.float32, (L, T))}
    if not params:  # the first format: every part
        return {"attn": (np.float16, (L, P, H)), **per_node}
    epsilon, n = params.get("epsilon"), params.get("head_parts")
    if set(params) != {"epsilon", "head_parts"}:
        raise ValueError("its params are not epsilon and head_parts")
    if not isinstance(epsilon, (int, float)) or isinstance(epsilon, bool) or not 0 < epsilon < 1:
        raise ValueError("its epsilon is not a number between 0 and 1")
    most = L * T * min(MAX_HEAD_PARTS, math.floor(1 / epsilon), T * H)
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= most:
        raise ValueError(f"its head_parts is not a whole number from 0 to {most}")
    return {"edges": (np.float16, (L, P)), **per_node, "head_counts": (np.int32, (L, T)),
            "head_keys": (np.int32, (n,)), "head_shares": (np.float16, (n,))}


def check(arrays: dict[str, np.ndarray], n_heads: int) -> None:
    """Every contribution is a share from 0 to 1 (NaN included), and the head parts are where their
    counts say: each node's keys (s·H + h) name a key s up to the node's position, in order
    (ValueError otherwise)."""
    for name in ("attn",) + SHARES:
        a = arrays.get(name)
        if a is not None and a.size and not np.all((a >= 0) & (a <= 1 + SHARE_SLACK)):
            raise ValueError(f"its {name} holds values outside 0 to 1")
    if "attn" in arrays:
        return
    counts, keys = arrays["head_counts"], arrays["head_keys"]
    if counts.size and (counts.min() < 0 or counts.max() > MAX_HEAD_PARTS):
        raise ValueError(f"its head_counts are not from 0 to {MAX_HEAD_PARTS}")
    if int(counts.sum(dtype=np.int64)) != keys.shape[0]:
        raise ValueError(f"its head_counts add up to {int(counts.sum(dtype=np.int64))}, but it has "
                         f"{keys.shape[0]} head parts")
    T = counts.shape[1]
    node = np.repeat(np.arange(counts.size), counts.ravel())
    position = node % T if T else node
    if keys.size and (keys.min() < 0 or np.any(keys // n_heads > position)):
        raise ValueError("its head_keys name keys after their query")
    same = node[1:] == node[:-1]
    if np.any(same & (keys[1:] <= keys[:-1])):
        raise ValueError("its head_keys are not in order within a node")
