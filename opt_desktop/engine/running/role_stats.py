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


class InductionTargets:
    """The induction targets of every query of a prompt, found once (not for each layer and block of
    queries): (query, key) pairs sorted by query. Found a chunk of queries at a time, so a long prompt
    never holds a T x T comparison."""

    CHUNK = 256

    def __init__(self, ids: torch.Tensor):
        rows, keys = [], []
        for first in range(0, ids.shape[0], self.CHUNK):
            r, k = induction_pairs(ids, first, min(ids.shape[0], first + self.CHUNK))
            rows.append(r + first)
            keys.append(k)
        self.queries = torch.cat(rows) if rows else ids.new_zeros(0)
        self.keys = torch.cat(keys) if keys else ids.new_zeros(0)

    def block(self, first: int, last: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The pairs of queries first..last-1, rows counted from `first`, on `device`."""
        lo, hi = torch.searchsorted(self.queries, torch.tensor([first, last], device=self.queries.device)).tolist()
        return (self.queries[lo:hi] - first).to(device), self.keys[lo:hi].to(device)


def role_stats(w: torch.Tensor, offset: int, targets: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """(..., q, k) float32 weights of queries offset..offset+q-1 -> (2, ..., q): previous, induction.

    `targets`: the (row, key) induction targets of these queries (induction_pairs, InductionTargets),
    or None when the run's token ids are unknown (induction is then NaN)."""
    q = w.shape[-2]
    queries = torch.arange(offset, offset + q, device=w.device)
    index = (queries - 1).clamp_min(0).view(q, 1).expand(*w.shape[:-2], q, 1)
    previous = w.gather(-1, index).squeeze(-1)
    previous[..., queries == 0] = float("nan")
    induction = torch.full_like(previous, float("nan"))
    if targets is not None and targets[0].numel():
        rows, keys = targets
        # Only the targets are read: a few per query in ordinary text (every key only when one
        # token repeats throughout), so this costs far less than a pass over the block.
        picked = w.reshape(*w.shape[:-2], -1).index_select(-1, rows * w.shape[-1] + keys)  # w[..., rows, keys]
        sums = torch.zeros_like(previous).index_add_(-1, rows, picked)
        has_copy = torch.zeros(q, dtype=torch.bool, device=w.device)
        has_copy[rows] = True
        induction = torch.where(has_copy, sums, induction)
    return torch.stack([previous, induction])
