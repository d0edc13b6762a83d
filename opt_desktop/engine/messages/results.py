"""Results of the engine's teacher-forced analyses: plain numpy in frozen dataclasses, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .routes_result import Routes  # noqa: F401 (a result like the others)
from .rows import row_label

# Recovery, (p - corrupted) / (clean - corrupted), divides by the gap between the two runs: when they
# give the target nearly the same probability, a patch that moves it a little reads as many times the
# whole difference (0.05095 and 0.05133 gave maps from -16 to 17). Below this gap, relative to the
# larger probability, a patching map shows p - corrupted instead.
MIN_RELATIVE_GAP = 0.1


@dataclass(frozen=True)
class Divergence:
    """Two teacher-forced passes over the same T tokens (e.g. a run with and without an intervention).

    logprob_base/logprob_other: (T,) float32, log-probability of token t under each pass's
    distribution at t-1; kl: (T,) float32, KL(base || other) of those two next-token distributions.
    All three are NaN at t = 0, which nothing predicts.
    """

    logprob_base: np.ndarray
    logprob_other: np.ndarray
    kl: np.ndarray


@dataclass(frozen=True)
class Downloaded:
    """A download that ended: `folder` is the snapshot in the engine machine's Hub cache."""

    repo_id: str
    folder: str
    bytes_fetched: int = 0  # 0 when everything was already in the cache


@dataclass(frozen=True)
class HeadImportance:
    """How much each head matters to the generated tokens of one sequence.

    delta: (L, H) float32, sum over generated positions t >= n_prompt of
    logprob_with_head_scaled[t] - logprob_baseline[t] (negative: the head helped predict them);
    NaN for heads not computed because the job was stopped (then `completed` is False).
    baseline_logprob: the unscaled sum of those log-probabilities.
    """

    delta: np.ndarray
    baseline_logprob: float
    completed: bool
    scale: float = 0.0
    n_prompt: int = 0


@dataclass(frozen=True)
class Attribution:
    """How much each input token contributed to the prediction of one target token.

    token_ids: (T,) int64, the whole input, the leading `</s>` included; the target is predicted from
    its last position. scores: (T,) float32, scores[i] belongs to token_ids[i]: the attribution to
    that token's embedding summed over the embedding dimension.
    method: "ixg" (input × gradient) or "ig" (integrated gradients from a zero embedding, Gauss-Legendre
    with `steps` points; None for ixg). The attributed function is log p(target) at the last position,
    or logit(target) - logit(alternative) when `alternative_id` is set.
    logprob: log p(target) under the model in its own precision mode (as the Output view shows it).
    value / baseline_value: the attributed function at the input and at the zero baseline, computed
    where the gradients were (in `gradient_dtype`); for ig, scores sum to about value - baseline_value.
    note: one line for the view when the gradients were not the model's own float32 ones, else None.
    head_mask / hidden_positions: the interventions the model ran under.
    """

    token_ids: np.ndarray
    scores: np.ndarray
    target_id: int
    alternative_id: int | None
    method: str
    steps: int | None
    logprob: float
    value: float
    baseline_value: float
    gradient_dtype: str = "float32"
    note: str | None = None
    head_mask: tuple = ()
    hidden_positions: tuple[int, ...] = ()

    @property
    def convergence_delta(self) -> float:
        """sum(scores) - (value - baseline_value): how far integrated gradients are from complete."""
        return float(np.sum(self.scores, dtype=np.float64) - (self.value - self.baseline_value))


@dataclass(frozen=True)
class Patching:
    """Activation patching from a clean run into a corrupted run of the same length, for one target token.

    clean_ids / corrupt_ids: (T,) int64, each the whole input with its leading `</s>`; the target is
    predicted from the last position. prob: (L+1, T) float32, the target's probability in the corrupted
    run with hidden-state row r (0 = `embed`, the input of decoder layer 0; r = l + 1 the output of layer
    l) at position t replaced by the clean run's. head_prob: (L, H) float32, the same with head h of
    layer l (its slice of `self_attn.out_proj`'s input, all positions) replaced; empty (0, 0) when heads
    were not patched. clean_prob / corrupt_prob: the target's probability in the unpatched runs.
    """

    clean_ids: np.ndarray
    corrupt_ids: np.ndarray
    target_id: int
    clean_prob: float
    corrupt_prob: float
    prob: np.ndarray
    head_prob: np.ndarray
    head_mask: tuple = ()
    hidden_positions: tuple[int, ...] = ()

    @property
    def row_labels(self) -> tuple[str, ...]:
        """"embed", "0", ..., "L-1": the rows of `prob`, as the rest of the app names hidden-state rows."""
        return tuple(row_label(r) for r in range(self.prob.shape[0]))

    @property
    def normalisable(self) -> bool:
        """Whether the clean and corrupted probabilities are far enough apart to measure recovery by."""
        gap = abs(self.clean_prob - self.corrupt_prob)
        return bool(np.isfinite(gap)) and gap > 1e-12 and gap >= MIN_RELATIVE_GAP * max(self.clean_prob,
                                                                                       self.corrupt_prob)

    @property
    def too_close(self) -> str:
        """One line saying the two runs are too close to normalise ("" when they are not)."""
        if self.normalisable:
            return ""
        return (f"The clean and corrupted runs give the target nearly the same probability ({self.clean_prob:.4g} "
                f"and {self.corrupt_prob:.4g}): too close to normalise, so each cell shows how far the patch "
                "moves it from the corrupted run's (p − corrupted).")

    @property
    def shown_what(self) -> str:
        """What `shown` holds, for a colour bar or a table's title."""
        return "recovered (0 corrupted … 1 clean)" if self.normalisable else "p − corrupted"

    def shown(self, values: np.ndarray) -> np.ndarray:
        """A patching map as it is shown: recovered (0 corrupted, 1 clean) when the runs are far enough
        apart (`normalisable`), else the change in the target's probability from the corrupted run's."""
        if self.normalisable:
            return self.normalised(values)
        return (np.asarray(values, np.float64) - self.corrupt_prob).astype(np.float32)

    def normalised(self, values: np.ndarray) -> np.ndarray:
        """(p - corrupt_prob) / (clean_prob - corrupt_prob): 0 is the corrupted run, 1 the clean run;
        all NaN when the two runs give the target the same probability (nothing to recover)."""
        span = self.clean_prob - self.corrupt_prob
        if not np.isfinite(span) or abs(span) < 1e-12:
            return np.full(np.shape(values), np.nan, np.float32)
        return ((np.asarray(values, np.float64) - self.corrupt_prob) / span).astype(np.float32)

    @property
    def prob_normalised(self) -> np.ndarray:
        return self.normalised(self.prob)

    @property
    def head_prob_normalised(self) -> np.ndarray:
        return self.normalised(self.head_prob)


@dataclass(frozen=True)
class LensTable:
    """The logit lens of every position of one sequence: each hidden-state row (embed, then the
    output of layers 0 … L-1) read through the model's own head, as engine/running/lens.py reads one.

    top_ids: (L+1, T, k) int64 and top_probs: (L+1, T, k) float32, the k most likely next tokens
    per row and position; target_logprob: (L+1, T) float32, the log-probability (natural log) of
    the token that actually came next (NaN at the last position, which has none); target_rank:
    (L+1, T) int64, its 1-based rank (0 at the last position). Row L is the model's own next-token
    distribution. pieces: each id in top_ids shown alone, so the table reads without a tokenizer.
    """

    top_ids: np.ndarray
    top_probs: np.ndarray
    target_logprob: np.ndarray
    target_rank: np.ndarray
    pieces: dict = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return int(self.top_ids.shape[0])

    @property
    def n_positions(self) -> int:
        return int(self.top_ids.shape[1])

    @property
    def top_k(self) -> int:
        return int(self.top_ids.shape[2])


@dataclass(frozen=True)
class Tokens:
    """A text as the model's tokenizer reads it: its ids and each token shown alone."""

    ids: tuple[int, ...]
    pieces: tuple[str, ...]


@dataclass(frozen=True)
class Folder:
    """An OPT checkpoint in a folder of the engine's machine: its full path there and its config.json."""

    path: str
    config: dict
