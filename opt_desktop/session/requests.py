"""Requests rebuilt from a recorded run: run it again exactly, or fork it at one token."""

from __future__ import annotations

from typing import get_args

from ..engine.messages.errors import SettingsError
from ..engine.messages.interventions_spec import normalize_head_mask
from ..engine.messages.settings import Device, GenerationRequest, GenerationSettings, InspectSettings, LoadRequest
from .trace import RunTrace


def _settings(trace: RunTrace) -> GenerationSettings:
    # The seed actually used (Started.seed), so a sampled run draws the same tokens again.
    return GenerationSettings.parse(**{**trace.started.settings, "seed": trace.started.seed})


def _inspect(trace: RunTrace) -> InspectSettings:
    # rows_on_demand belongs to the link the run crossed, not to the run: the engine that runs it
    # again sets it for its own link.
    return InspectSettings.parse(**{**trace.started.inspect, "rows_on_demand": False})


def rerun_requests(trace: RunTrace) -> tuple[LoadRequest, GenerationRequest]:
    """The recorded model and the exact request of `trace`: same prompt ids, settings and seed,
    inspection, head mask (the one in force at the start) and hidden positions.

    Head-mask changes made while the run streamed are not part of a request, so a run with
    `mask_changes` is reproduced only up to its first change. A model from the Hub is pinned to
    the commit the run used.
    """
    s = trace.started
    info = s.model
    device = info.device.split(":")[0]
    load = LoadRequest.parse(
        source=info.source, dtype=info.dtype, device=device if device in get_args(Device) else "auto",
        placement="spread" if info.placement else "one-device", revision=info.revision)
    request = GenerationRequest.parse(
        prompt=s.prompt, prompt_ids=tuple(s.prompt_ids), settings=_settings(trace),
        inspect=_inspect(trace), head_mask=normalize_head_mask(s.head_mask),
        hidden_positions=tuple(s.hidden_positions))
    return load, request


def fork_request(trace: RunTrace, position: int, token_id: int, settings: GenerationSettings | None = None,
                 *, token_text: str | None = None) -> GenerationRequest:
    """Continue `trace` from its tokens [0, position) followed by `token_id` instead of its own token.

    `position` is the whole-sequence index of the token replaced: 1 <= position <= trace.length - 1
    (position 0 is the leading `</s>`; a prompt token may be replaced too). The new run's prompt ids
    are that edited prefix; it keeps the run's settings and seed (unless `settings` is given), its
    inspection, the head mask in force when position was produced, and the hidden positions that
    lie before `position`. `token_text` (default: the piece the run knows for that id) only fills
    the request's display prompt. Raises SettingsError for a position or token id out of range.
    """
    s = trace.started
    last = trace.length - 1
    if not 1 <= position <= last:
        raise SettingsError(f"A fork replaces a token at position 1 to {last} of this run, not {position}.")
    vocab = s.model.vocab_size
    if not 0 <= token_id < vocab:
        raise SettingsError(f"Token id {token_id} is outside this model's vocabulary of {vocab}.")
    P = trace.n_prompt
    if position >= P:
        before = s.prompt + "".join(trace.text_parts[: position - P])
    else:
        before = "".join(trace.pieces[1:position])  # the prompt's pieces after the leading </s>
    text = token_text if token_text is not None else trace.known_pieces().get(token_id, "")
    mask = trace.head_mask_at(position - P) if position >= P else s.head_mask
    return GenerationRequest.parse(
        prompt=before + text, prompt_ids=tuple(trace.token_ids[:position]) + (int(token_id),),
        settings=settings if settings is not None else _settings(trace),
        inspect=_inspect(trace), head_mask=normalize_head_mask(mask),
        hidden_positions=tuple(p for p in s.hidden_positions if p < position))
