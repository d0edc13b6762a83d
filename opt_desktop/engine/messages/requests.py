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
class HeadRowsRequest:
    """One head's whole attention matrix over a finished run's tokens, teacher-forced under the run's own
    interventions (analyses/head_rows.py): (T, T) float32, for a run whose full rows stayed on a server."""

    token_ids: tuple[int, ...]
    layer: int
    head: int
    hidden_positions: tuple[int, ...] = ()
    mask_schedule: tuple = ((0, ()),)  # as LensTableRequest's


@dataclass(frozen=True)
class RoutesRequest:
    """The information-flow routes of every position of a finished run (routes.py), teacher-forced."""

    token_ids: tuple[int, ...]
    hidden_positions: tuple[int, ...] = ()
    # (first position, head mask as (layer, head, scale) triples): the mask each position ran under
    mask_schedule: tuple = ((0, ()),)
    dense: bool = False  # the full [L][T][T][H] array too (the CLI's JSON), where it fits in memory


@dataclass(frozen=True)
class DownloadRequest:
    """Fetch what loading `repo_id` needs into the Hugging Face cache of the machine the engine runs on.

    `cache`: another cache folder than the shared one (tests, a person's own HF_HUB_CACHE); None is
    huggingface_hub's (HF_HUB_CACHE, else HF_HOME/hub)."""

    repo_id: str
    revision: str | None = None
    cache: str | None = None


@dataclass(frozen=True)
class MachineRequest:
    """What the engine's machine has: its RAM and each CUDA GPU with its memory. The GPUs are counted
    by torch, imported for it unless `import_torch` is False (an engine in the window's process, which
    never imports torch before a load needs it: then GPUs are listed only once torch is there)."""

    import_torch: bool = True


# What the model manager asks of the engine's machine (jobs/machine_jobs.py): with the engine on a
# server, its Hugging Face cache and its folders are the server's.

@dataclass(frozen=True)
class CacheRequest:
    """The models in the machine's Hugging Face cache (`cache`: another folder than its shared one)."""

    cache: str | None = None


@dataclass(frozen=True)
class DeleteCachedRequest:
    """Delete `repo_id` from the machine's Hugging Face cache; the result is the bytes freed."""

    repo_id: str
    cache: str | None = None


@dataclass(frozen=True)
class HubCheckRequest:
    """Whether the machine reaches the Hugging Face Hub now: "" if it does, else why not, in words."""


@dataclass(frozen=True)
class FolderRequest:
    """Whether `path`, a folder on the machine, holds an OPT checkpoint that loads (results.Folder)."""

    path: str


@dataclass(frozen=True)
class TokenizeRequest:
    """A text as the loaded model's tokenizer reads it (results.Tokens), so a front end with no
    tokenizer of its own (an engine on a server) can name tokens.

    As a prompt: with OPT's leading `</s>` (`add_bos`). With `single` set ("target", say), the
    text must be exactly one token, else the job fails with one line naming it so."""

    text: str
    add_bos: bool = True
    single: str | None = None


@dataclass(frozen=True)
class PiecesRequest:
    """Each token of `ids` shown alone, as the tokenizer writes it (a tuple of str)."""

    ids: tuple[int, ...]
