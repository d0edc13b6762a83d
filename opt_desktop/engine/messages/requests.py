"""Plain-data requests for the engine's analyses, one per kind of job (no torch, no Qt).

Loading and generating have their validated requests in settings.py; these describe the
teacher-forced analyses of a finished run. Each is frozen, so a job's request cannot change
under the worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .settings import HeadScale


@dataclass(frozen=True)
class LensRequest:
    """Read kept residual rows (L+1, D) of one position through the model's head."""

    residual_rows: np.ndarray
    target_id: int | None
    position: int = -1
    top_k: int = 5


@dataclass(frozen=True)
class DivergenceRequest:
    """Teacher-force `token_ids` under two interventions and compare the next-token distributions."""

    token_ids: tuple[int, ...]
    base_mask: tuple[HeadScale, ...] = ()
    other_mask: tuple[HeadScale, ...] = ()
    base_hidden: tuple[int, ...] = ()
    other_hidden: tuple[int, ...] = ()


@dataclass(frozen=True)
class HeadImportanceRequest:
    """Scale each head in turn and measure the change in the generated tokens' log-probability."""

    token_ids: tuple[int, ...]
    n_prompt: int
    scale: float = 0.0
    base_mask: tuple[HeadScale, ...] = ()
    hidden: tuple[int, ...] = field(default=())


@dataclass(frozen=True)
class ProbeRequest:
    """Ask what this machine can run (precision.Capabilities), with torch itself."""


@dataclass(frozen=True)
class AttributionRequest:
    """Which input tokens made `target_id` the prediction after `token_ids` (attribution.py)."""

    token_ids: tuple[int, ...]
    target_id: int | None = None  # None: the model's greedy next token
    method: str = "ig"  # "ig" (integrated gradients) or "ixg" (input x gradient)
    steps: int = 32
    alternative_id: int | None = None  # attribute logit(target) - logit(alternative) instead of log p
    head_mask: tuple[HeadScale, ...] = ()
    hidden: tuple[int, ...] = ()


@dataclass(frozen=True)
class PatchingRequest:
    """Where the clean run's residual stream and heads carry what makes `target_id` (patching.py)."""

    clean_ids: tuple[int, ...]
    corrupt_ids: tuple[int, ...]
    target_id: int | None  # None: the token `target_text` is (one token, else the job is refused)
    heads: bool = True
    head_mask: tuple[HeadScale, ...] = ()
    hidden: tuple[int, ...] = ()
    target_text: str | None = None


@dataclass(frozen=True)
class LensTableRequest:
    """The logit lens of every row and position of a finished run, from exact rows (lens_table.py)."""

    token_ids: tuple[int, ...]
    hidden_positions: tuple[int, ...] = ()
    # (first position, head mask as (layer, head, scale) triples): the mask each position ran under
    mask_schedule: tuple = ((0, ()),)


@dataclass(frozen=True)
class RoutesRequest:
    """The information-flow routes of every position of a finished run (routes.py), teacher-forced."""

    token_ids: tuple[int, ...]
    hidden_positions: tuple[int, ...] = ()
    # (first position, head mask as (layer, head, scale) triples): the mask each position ran under
    mask_schedule: tuple = ((0, ()),)


@dataclass(frozen=True)
class DownloadRequest:
    """Fetch what loading `repo_id` needs into the Hugging Face cache of the machine the engine runs on.

    `cache`: another cache folder than the shared one (tests, a person's own HF_HUB_CACHE); None is
    huggingface_hub's (HF_HUB_CACHE, else HF_HOME/hub)."""

    repo_id: str
    revision: str | None = None
    cache: str | None = None
