"""Which heads of a run behave as previous-token, induction or sink heads: the standard scores, read
from the run's per-query attention statistics, and the few heads they mark. Qt-free.

For head h of layer l over the run's fed queries t >= 1 (every position but the last generated one):

* previous-token score: mean of A[t, t-1];
* sink score: mean of A[t, 0];
* induction score: mean, over the queries whose token occurred before (x_j = x_t for some j < t-1),
  of Σ_j A[t, j+1] (engine/running/role_stats.py). A run without such a query has no induction
  score at all.

Each score has a baseline, what it would be by chance, averaged over the same queries: for the
previous-token and sink scores 1/(t+1), the weight of one key under even attention over keys 0..t
(large in a short run); for induction the weight the head does not put on key 0 spread evenly over
keys 1..t, (1 - A[t, 0]) · n_t / t, n_t being the query's number of targets (text in which most
keys follow a copy, one token repeated, gives any head a high score and a baseline as high).

A head is marked for a role when its score is at least THRESHOLD and at least MARGIN above its
baseline; at most MOST_PER_ROLE heads per role, the strongest. docs/attention-heads.md says the
same for people.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .trace import RunTrace

ROLES = ("previous", "induction", "sink")
ROLE_NAMES = {"previous": "previous-token", "induction": "induction", "sink": "sink"}
ROLE_LETTERS = {"previous": "P", "induction": "I", "sink": "S"}
# What each score is, in a few words (the view's tooltips, the HTML report's captions).
ROLE_DEFINITIONS = {
    "previous": "mean weight on the previous token, A[t, t−1], over the queries t ≥ 1",
    "induction": "mean weight on the tokens that followed earlier copies of the current token, Σ A[t, j+1] "
                 "over x_j = x_t with j < t−1, over the queries whose token occurred before",
    "sink": "mean weight on position 0 (the leading </s>), A[t, 0], over the queries t ≥ 1",
}
THRESHOLD = 0.4
MARGIN = 0.2
MOST_PER_ROLE = 3


@dataclass(frozen=True)
class MarkedHead:
    role: str
    layer: int
    head: int
    score: float
    baseline: float

    @property
    def label(self) -> str:
        return f"L{self.layer}H{self.head}"


@dataclass(frozen=True)
class RoleScores:
    """Per-head scores (L, H) of one run so far. A role's entry is None when it cannot be scored:
    see `why_not`."""

    scores: dict[str, np.ndarray | None]
    baseline: dict[str, np.ndarray | None]  # role -> (L, H) its scores' baseline
    n_queries: int  # fed queries t >= 1
    n_copies: int  # of those, queries whose token occurred before
    from_rows: bool = False  # previous/induction computed from the kept float16 rows (an older file)
    why_not: dict[str, str] = field(default_factory=dict)  # role -> why it has no score

    def marked(self) -> dict[str, list[MarkedHead]]:
        """The heads each role marks, strongest first (at most MOST_PER_ROLE each)."""
        return {role: candidates(self, role)[:MOST_PER_ROLE] for role in ROLES}

    def roles_of(self, layer: int, head: int) -> list[MarkedHead]:
        return [m for marks in self.marked().values() for m in marks if (m.layer, m.head) == (layer, head)]

    def strongest(self, role: str) -> MarkedHead | None:
        """The head with the role's highest score, marked or not (None when the role has no score):
        where no head is marked, how close the best one came."""
        values = self.scores.get(role)
        if values is None or not np.isfinite(values).any():
            return None
        layer, head = np.unravel_index(int(np.nanargmax(values)), values.shape)  # the first of equals
        return MarkedHead(role, int(layer), int(head), float(values[layer, head]), float(self.baseline[role][layer, head]))


def marks_text(scores: RoleScores) -> str:
    """One plain line: 'previous-token L0H1 (0.93); induction L1H2 (0.71); sink none (strongest L2H0, 0.21)'."""
    parts = []
    for role in ROLES:
        if scores.scores.get(role) is None:
            parts.append(f"{ROLE_NAMES[role]} not scored")
            continue
        heads = candidates(scores, role)
        shown = ", ".join(f"{m.label} ({m.score:.2f})" for m in heads[:MOST_PER_ROLE]) or none_text(scores, role)
        more = f" and {len(heads) - MOST_PER_ROLE} more" if len(heads) > MOST_PER_ROLE else ""
        parts.append(f"{ROLE_NAMES[role]} {shown}{more}")
    return "; ".join(parts)


def none_text(scores: RoleScores, role: str) -> str:
    """What a role that marks no head says: 'none (strongest L2H0, 0.21)'."""
    best = scores.strongest(role)
    return "none" if best is None else f"none (strongest {best.label}, {best.score:.2f})"


def candidates(scores: RoleScores, role: str) -> list[MarkedHead]:
    """Every head that passes the role's thresholds, strongest first."""
    values = scores.scores.get(role)
    if values is None:
        return []
    baseline = scores.baseline[role]
    ok = (np.nan_to_num(values, nan=-1.0) >= THRESHOLD) & (np.nan_to_num(values - baseline, nan=-1.0) >= MARGIN)
    layers, heads = np.nonzero(ok)
    out = [MarkedHead(role, int(la), int(h), float(values[la, h]), float(baseline[la, h]))
           for la, h in zip(layers, heads)]
    return sorted(out, key=lambda m: (-m.score, m.layer, m.head))


def earlier_copies(token_ids) -> np.ndarray:
    """(T,) n_t: how many keys follow an earlier copy of token t (x_j = x_t, j < t-1), i.e. its
    induction targets. One pass over the tokens."""
    ids = [int(i) for i in token_ids]
    counts = np.zeros(len(ids), np.int64)
    seen: dict[int, int] = {}
    for t, token in enumerate(ids):
        if t >= 2:  # x_{t-2} becomes an earlier copy for every query from t on
            seen[ids[t - 2]] = seen.get(ids[t - 2], 0) + 1
        counts[t] = seen.get(token, 0)
    return counts


def _targets(token_ids) -> tuple[np.ndarray, np.ndarray]:
    """(query, key) of every induction target of the run's queries (see earlier_copies)."""
    ids = np.asarray(token_ids, np.int64)
    T = ids.shape[0]
    same = (ids[:, None] == ids[None, :]) & (np.arange(T)[None, :] <= np.arange(T)[:, None] - 2)
    queries, j = np.nonzero(same)
    return queries, j + 1


def per_query(trace: RunTrace, name: str) -> np.ndarray | None:
    """(L, H, T) per-query statistic `name` of ATTENTION_STATS; for the previous-token and induction
    weights of a file saved before they were recorded, computed from its kept attention rows (float16),
    else None."""
    if name not in trace.missing_attention:
        return trace.attention(name)
    rows = trace.attention_rows() if trace.has_attention_rows else None
    if rows is None or name not in ("previous", "induction"):
        return None
    rows = rows.astype(np.float32)
    L, H, T, _ = rows.shape
    out = np.full((L, H, T), np.nan, np.float32)
    if name == "previous":
        t = np.arange(1, T)
        out[..., 1:] = rows[..., t, t - 1]
        return out
    queries, keys = _targets(trace.token_ids)
    if queries.size:
        sums = np.zeros((L, H, T), np.float32)
        np.add.at(sums, (slice(None), slice(None), queries), rows[..., queries, keys])
        has = np.zeros(T, bool)
        has[queries] = True
        out[..., has] = sums[..., has]
    fed = np.isfinite(rows[..., np.arange(T), 0])  # a query whose row was kept
    out[~fed] = np.nan
    return out


def role_scores(trace: RunTrace) -> RoleScores | None:
    """The run's scores so far; None when it captured no attention statistics at all."""
    sink = trace.attention("sink")
    fed = np.isfinite(sink).all(axis=(0, 1))  # (T,) queries whose statistics exist
    if not fed.any():
        return None
    fed[0] = False  # query 0 sees only itself: no previous token, and its sink weight is 1
    T = trace.length
    copies = earlier_copies(trace.token_ids)
    with_copy = fed & (copies > 0)
    why_not: dict[str, str] = {}
    if not fed.any():  # only query 0 was fed: nothing to average
        why = "not yet: only the first token has been read"
        return RoleScores(scores=dict.fromkeys(ROLES), baseline=dict.fromkeys(ROLES), n_queries=0, n_copies=0,
                          why_not=dict.fromkeys(ROLES, why))
    t = np.arange(T)
    even = np.broadcast_to(1.0 / (t + 1), sink.shape)  # one key's weight under even attention over keys 0..t
    scores: dict[str, np.ndarray | None] = {"sink": _mean(sink, fed)}
    baseline: dict[str, np.ndarray | None] = {"sink": _mean(even, fed), "previous": None, "induction": None}
    previous, induction = per_query(trace, "previous"), per_query(trace, "induction")
    from_rows = bool(trace.missing_attention & {"previous", "induction"}) and previous is not None
    missing = "not in this file (saved by an earlier OPT Desktop, without full attention rows): run the prompt again"
    scores["previous"] = None if previous is None else _mean(previous, fed)
    if previous is None:
        why_not["previous"] = missing
    else:
        baseline["previous"] = _mean(even, fed)
    if induction is None:
        scores["induction"] = None
        why_not["induction"] = missing
    elif not with_copy.any():
        scores["induction"] = None
        why_not["induction"] = "none yet: no token has occurred before (repeat some text to see induction)"
    else:
        scores["induction"] = _mean(induction, with_copy)
        chance = (1.0 - sink) * (copies / np.maximum(t, 1))  # (L, H, T)
        baseline["induction"] = _mean(chance, with_copy)
    return RoleScores(scores=scores, baseline=baseline, n_queries=int(fed.sum()), n_copies=int(with_copy.sum()),
                      from_rows=from_rows, why_not=why_not)


def _mean(values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(L, H) mean over the chosen queries of (L, H, T) values, NaN ones left out (NaN where none is left)."""
    chosen = values[..., queries]
    finite = np.isfinite(chosen)
    count = finite.sum(-1)
    total = np.where(finite, chosen, 0.0).sum(-1, dtype=np.float64)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)
