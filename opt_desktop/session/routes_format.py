"""How information-flow routes are kept in a session file (docs/session-format.md, `routes`).

The attention contributions of a run of T positions are L × T × T × H numbers, half of them zero
(a key after its query is no part): the file keeps the lower triangle only, row by row, in float16,
a quarter of the full float32 array. The other three arrays are (L, T) float32.
"""

from __future__ import annotations

import numpy as np

from ..engine.messages.results import Routes

ROUTES = "routes"
SHARE_SLACK = 1e-3  # float16 rounds a share of 1 to within this


def pack_lower(attn: np.ndarray) -> np.ndarray:
    """(L, T, T, H) -> (L, T(T+1)/2, H) float16: for each query t, keys 0 … t, t after t."""
    T = attn.shape[1]
    t, s = np.tril_indices(T)
    return np.ascontiguousarray(attn[:, t, s, :], dtype=np.float16)


def unpack_lower(packed: np.ndarray, T: int) -> np.ndarray:
    """(L, T(T+1)/2, H) -> (L, T, T, H) float32, zeros above the diagonal."""
    L, _, H = packed.shape
    out = np.zeros((L, T, T, H), np.float32)
    t, s = np.tril_indices(T)
    out[:, t, s, :] = packed
    return out


def routes_arrays(result: Routes) -> dict[str, np.ndarray]:
    return {"attn": pack_lower(result.attn),
            "attn_residual": np.ascontiguousarray(result.attn_residual, np.float32),
            "mlp": np.ascontiguousarray(result.mlp, np.float32),
            "mlp_residual": np.ascontiguousarray(result.mlp_residual, np.float32)}


def routes_of(arrays: dict[str, np.ndarray], token_ids) -> Routes:
    T = len(token_ids)
    return Routes(token_ids=np.asarray(token_ids, np.int64), attn=unpack_lower(arrays["attn"], T),
                  attn_residual=arrays["attn_residual"], mlp=arrays["mlp"], mlp_residual=arrays["mlp_residual"])


def expected(n_layers: int, n_heads: int, n_positions: int) -> dict[str, tuple[type, tuple[int, ...]]]:
    L, H, T = n_layers, n_heads, n_positions
    return {"attn": (np.float16, (L, T * (T + 1) // 2, H)), "attn_residual": (np.float32, (L, T)),
            "mlp": (np.float32, (L, T)), "mlp_residual": (np.float32, (L, T))}


def check(arrays: dict[str, np.ndarray]) -> None:
    """Every contribution is a share from 0 to 1 (ValueError otherwise; NaN included)."""
    for name in ("attn", "attn_residual", "mlp", "mlp_residual"):
        a = arrays[name]
        if a.size and not np.all((a >= 0) & (a <= 1 + SHARE_SLACK)):
            raise ValueError(f"its {name} holds values outside 0 to 1")
