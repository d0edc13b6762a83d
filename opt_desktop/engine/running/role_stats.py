"""Per-query attention statistics that name what a head does: its weight on the previous token, and
its weight on the tokens that followed earlier copies of the current token (induction).

For query t over keys 0..t of token ids x_0 … x_t (x_0 the leading `</s>`):

* previous: A[t, t-1] (NaN at t = 0, which has no previous token);
* induction: Σ_j A[t, j+1] over the earlier copies j of the current token, x_j = x_t with
  j < t-1, i.e. the keys s = j+1 in 1..t-1 whose preceding token x_{s-1} is x_t. This is
  TransformerLens' "induction_head" pattern (Olsson et al. 2022's prefix matching) except that the
  query's own key is left out: with x_{t-1} = x_t ("the the") that pattern would credit a head for
  attending to itself. NaN for a query with no earlier copy: it has no induction weight, not 0.

The run's means of these (and of the sink weight A[t, 0]) are the scores that mark heads; see
docs/attention-heads.md.
"""

from __future__ import annotations

import torch


def induction_pairs(ids: torch.Tensor, first: int, last: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(query row, key) of every induction target for the queries first..last-1 (row 0 = query `first`):
    key s with 1 <= s <= t-1 and ids[s-1] == ids[t]. `ids` holds the tokens of positions 0..last-1 (at least)."""
    queries = torch.arange(first, last, device=ids.device)
    earlier = ids[: max(last - 2, 0)]  # j <= t-2 for every query of the block
    same = ids[first:last, None] == earlier[None, :]
    same &= torch.arange(earlier.shape[0], device=ids.device)[None, :] <= (queries - 2)[:, None]
    rows, j = same.nonzero(as_tuple=True)
    return rows, j + 1


def role_stats(w: torch.Tensor, offset: int, ids: torch.Tensor | None) -> torch.Tensor:
    """(..., q, k) float32 weights of queries offset..offset+q-1 -> (2, ..., q): previous, induction.

    `ids`: the token ids of positions 0..offset+q-1 on w's device, or None when they are unknown
    (induction is then NaN)."""
    q = w.shape[-2]
    queries = torch.arange(offset, offset + q, device=w.device)
    index = (queries - 1).clamp_min(0).view(q, 1).expand(*w.shape[:-2], q, 1)
    previous = w.gather(-1, index).squeeze(-1)
    previous[..., queries == 0] = float("nan")
    induction = torch.full_like(previous, float("nan"))
    if ids is not None:
        rows, keys = induction_pairs(ids.to(w.device), offset, offset + q)
        if rows.numel():
            # Only the targets are read: a few per query in ordinary text (every key only when one
            # token repeats throughout), so this costs far less than a pass over the block.
            sums = torch.zeros_like(previous).index_add_(-1, rows, w[..., rows, keys])
            has_copy = torch.zeros(q, dtype=torch.bool, device=w.device)
            has_copy[rows] = True
            induction = torch.where(has_copy, sums, induction)
    return torch.stack([previous, induction])
