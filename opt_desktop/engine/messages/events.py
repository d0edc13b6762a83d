"""Plain events the engine emits while it works. numpy and dataclasses only: no torch, no Qt.

Array shapes use L layers, H heads, D hidden width, q positions fed in one forward step.

A generation emits, in this order: Started; a Notice per start notice; TokenGenerated for the
first token; PromptScored (the prompt's statistics are computed once its first token is out, so
they never delay it); TokenGenerated for each later token, HeadMaskChanged where the head mask
changes; and always a final Finished. A run stopped while its prompt is being reduced has its
first token and no PromptScored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

import numpy as np

FinishReason = Literal["length", "eos", "stop_string", "cancelled", "error"]

HIDDEN_STATS = ("norm", "mean", "std", "maxabs", "argmax")
# Per query: entropy, weight on key 0, mean distance, weight on the previous token, weight on the tokens
# after earlier copies of the query's token (engine/running/role_stats.py; NaN where there is none).
ATTENTION_STATS = ("entropy", "sink", "distance", "previous", "induction")


@dataclass(frozen=True)
class ModeAccuracy:
    """How far an approximate precision mode is from float32, measured when the model was loaded:
    both read a short fixed text (teacher-forced, one forward pass each) and their next-token
    distributions are compared at every position."""

    mean_kl: float  # mean over positions of KL(float32 || mode), in nats; 0 when identical
    top1_agreement: float  # fraction of positions where both rank the same token first, in [0, 1]
    n_positions: int


@dataclass(frozen=True)
class ModelInfo:
    source: str
    label: str  # what the UI shows; names the built-in demo models for what they are
    n_layers: int
    n_heads: int
    hidden_size: int
    word_embed_proj_dim: int
    ffn_dim: int
    vocab_size: int
    context_length: int
    n_params: int
    dtype: str
    device: str
    memory_bytes: int
    pre_layer_norm: bool
    random_weights: bool = False
    eos_token_id: int = 2
    bos_token_id: int = 2
    revision: str | None = None  # the Hub commit the weights came from, when loaded from the Hub
    # Where each part went when a checkpoint is spread over devices: (module name, device), in order.
    placement: tuple[tuple[str, str], ...] = ()
    # The precision mode (`dtype`) against float32; None for float32 itself and where it was not
    # measured (on a GPU, or when a float32 copy would not fit in memory).
    accuracy: ModeAccuracy | None = None
    # The machine the engine ran on (its own name for itself: a GPU server's, or this computer's).
    host: str = ""


@dataclass(frozen=True)
class LoadProgress:
    """A step of loading; `fraction` is None while the length of the step is unknown."""

    message: str
    fraction: float | None = None


@dataclass(frozen=True)
class StepStats:
    """Statistics of the positions [start, start + q) fed to the model in one forward step.

    hidden[name]: (L+1, q), row 0 the input of decoder layer 0, row l the output of layer l.
    attention[name]: (L, H, q). residual: (L+1, q, D) float16, for the logit lens.
    attention_rows: per layer (H, q, k) float16, only when full rows are kept.
    """

    start: int
    hidden: dict[str, np.ndarray] = field(default_factory=dict)
    attention: dict[str, np.ndarray] = field(default_factory=dict)
    residual: np.ndarray | None = None
    attention_rows: tuple[np.ndarray, ...] | None = None

    @property
    def count(self) -> int:
        for arrays in (self.hidden, self.attention):
            for a in arrays.values():
                return a.shape[-1]
        return 0 if self.residual is None else self.residual.shape[1]


@dataclass(frozen=True)
class Started:
    model: ModelInfo
    prompt: str
    prompt_ids: tuple[int, ...]
    prompt_pieces: tuple[str, ...]
    max_new_tokens: int  # after clamping to the context
    seed: int
    settings: dict
    inspect: dict
    notices: tuple[str, ...] = ()
    head_mask: tuple[tuple[int, int, float], ...] = ()  # (layer, head, scale) in force at the start
    hidden_positions: tuple[int, ...] = ()  # prompt positions hidden from attention


@dataclass(frozen=True)
class PromptScored:
    """The prompt's own surprisal and internals, from the prefill forward pass; emitted right after
    the first TokenGenerated (see the module's note on order).

    logprob/entropy/rank: (P,) for token t under the raw distribution at t-1 (NaN / 0 at t = 0).
    top_ids/top_probs: (P, K) alternatives at each position's predicting distribution.
    elapsed_s: from the start of the run to these statistics being complete.
    """

    logprob: np.ndarray
    entropy: np.ndarray
    rank: np.ndarray
    top_ids: np.ndarray
    top_probs: np.ndarray
    fed: StepStats | None
    elapsed_s: float
    # Each alternative in top_ids shown alone, so a saved run can name them without its tokenizer.
    alternative_pieces: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenGenerated:
    index: int  # 0-based among generated tokens
    position: int  # index in the whole sequence (prompt included)
    token_id: int
    piece: str  # the token shown alone (bytes that are not whole characters shown as <0x..>)
    text: str  # what this token adds to the streamed text (may be "" while a character is incomplete)
    logprob: float
    rank: int
    entropy: float
    top_ids: tuple[int, ...]
    top_probs: tuple[float, ...]
    top_pieces: tuple[str, ...]
    elapsed_s: float
    # Internals of the position fed in the step that produced this token (None for the first token,
    # whose step was the prefill reported by PromptScored).
    fed: StepStats | None = None

    @property
    def prob(self) -> float:
        return float(np.exp(self.logprob))


@dataclass(frozen=True)
class HeadMaskChanged:
    """The head mask was changed during the run; it applies from generated token `index` on."""

    index: int
    head_mask: tuple[tuple[int, int, float], ...]


@dataclass(frozen=True)
class Notice:
    message: str


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    text: str
    token_ids: tuple[int, ...]  # generated ids only
    n_tokens: int
    elapsed_s: float
    time_to_first_token_s: float | None
    tokens_per_s: float | None  # decode rate after the first token
    memory_bytes: int | None = None  # in use at the end (GPU memory on CUDA, else the process)
    message: str = ""  # what went wrong, when the reason is "error"


Event = Union[Started, PromptScored, TokenGenerated, HeadMaskChanged, Notice, Finished]


@dataclass(frozen=True)
class LensResult:
    """Logit lens at one position: each row of the residual stream read through the model's head.

    top_ids/top_probs: (L+1, k); target_logprob: (L+1,) log-probability of `target_id`
    (the token that actually came next; NaN when there is none).
    """

    position: int
    top_ids: np.ndarray
    top_probs: np.ndarray
    top_pieces: tuple[tuple[str, ...], ...]
    target_id: int | None
    target_logprob: np.ndarray
