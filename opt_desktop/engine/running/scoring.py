"""Teacher-forced analyses of a fixed token sequence: divergence between two interventions, head importance.

Each pass is one forward over the whole sequence (no `generate`) that stops at the decoder's
final states; the vocabulary projection is then done a few rows at a time, so a 2,048-token
sequence never holds a 2,048 x 50k logit matrix.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..messages.errors import JobCancelled, PromptError
from ..messages.job_context import JobContext
from .interventions import HeadMask, attention_inputs
from ..messages.interventions_spec import check_head_mask, check_hidden_positions, normalize_head_mask
from .loaded import LoadedModel
from ..messages.results import Divergence, HeadImportance
from ..messages.settings import HeadScale
from .stopping import StopBetweenLayers

_ROWS = 64  # positions per vocabulary projection: 64 x 50k float32 logits is about 13 MB


def _token_tensor(loaded: LoadedModel, token_ids: Sequence[int]) -> torch.Tensor:
    info = loaded.info
    ids = [int(i) for i in token_ids]
    if not ids:
        raise PromptError("There are no tokens to score.")
    if len(ids) > info.context_length:
        raise PromptError(f"The sequence is {len(ids):,} tokens long, but {info.label} reads at most "
                          f"{info.context_length:,}.")
    bad = [i for i in ids if not 0 <= i < info.vocab_size]
    if bad:
        raise PromptError(f"Token id {bad[0]} is outside this model's vocabulary of {info.vocab_size}.")
    return torch.tensor([ids], device=loaded.device)


def _final_states(model, ids: torch.Tensor, hidden: Sequence[int], job: JobContext) -> torch.Tensor:
    """(T, D) decoder output (after final_layer_norm / project_out) of one teacher-forced forward;
    a stop of `job` ends it at the next decoder layer with JobCancelled."""
    attention_mask, position_ids = attention_inputs(ids.shape[1], hidden, ids.device)
    with StopBetweenLayers(model, job):
        out = model.model(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return out.last_hidden_state[0]


def _row_logprobs(model, states: torch.Tensor) -> torch.Tensor:
    """(n, D) final states -> (n, V) float32 log-probabilities (call on at most _ROWS rows)."""
    return torch.log_softmax(model.lm_head(states).float(), dim=-1)


def _target_logprobs(model, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Log-probability of targets[i] under the distribution read from states[i]; (n,) float32 on the CPU."""
    out = torch.empty(states.shape[0], dtype=torch.float32)
    for i0 in range(0, states.shape[0], _ROWS):
        logp = _row_logprobs(model, states[i0:i0 + _ROWS])
        tgt = targets[i0:i0 + _ROWS].to(logp.device).unsqueeze(-1)
        out[i0:i0 + logp.shape[0]] = logp.gather(-1, tgt).squeeze(-1).cpu()
    return out


def divergence(loaded: LoadedModel, token_ids: Sequence[int], base_mask: Sequence[HeadScale] = (),
               other_mask: Sequence[HeadScale] = (), base_hidden: Sequence[int] = (),
               other_hidden: Sequence[int] = (), job: JobContext | None = None) -> Divergence:
    """Teacher-force `token_ids` under two interventions; per position log-probs and KL(base || other).
    A stop of `job` ends it with JobCancelled (between layers, and between chunks of positions)."""
    job = job if job is not None else JobContext()
    model, info = loaded.model, loaded.info
    ids = _token_tensor(loaded, token_ids)
    T = ids.shape[1]
    masks = [normalize_head_mask(base_mask), normalize_head_mask(other_mask)]
    for mask in masks:
        check_head_mask(mask, info.n_layers, info.n_heads, info.label)
    hidden = [check_hidden_positions(base_hidden, T, "sequence"), check_hidden_positions(other_hidden, T, "sequence")]
    lp_base = np.full(T, np.nan, np.float32)
    lp_other = np.full(T, np.nan, np.float32)
    kl = np.full(T, np.nan, np.float32)
    with torch.inference_mode():
        states = []
        for mask, hid in zip(masks, hidden):
            with HeadMask(model, mask):
                states.append(_final_states(model, ids, hid, job)[:-1])  # row t-1 predicts token t
        base, other = states
        targets = ids[0, 1:]
        for i0 in range(0, T - 1, _ROWS):
            job.check()
            i1 = min(T - 1, i0 + _ROWS)
            lb = _row_logprobs(model, base[i0:i1])
            lo = _row_logprobs(model, other[i0:i1]).to(lb.device)
            tgt = targets[i0:i1].to(lb.device).unsqueeze(-1)
            lp_base[i0 + 1:i1 + 1] = lb.gather(-1, tgt).squeeze(-1).cpu().numpy()
            lp_other[i0 + 1:i1 + 1] = lo.gather(-1, tgt).squeeze(-1).cpu().numpy()
            # KL is never negative; rounding over a 50k vocabulary could make a tiny one so.
            kl[i0 + 1:i1 + 1] = (lb.exp() * (lb - lo)).sum(-1).clamp_min(0.0).cpu().numpy()
    return Divergence(logprob_base=lp_base, logprob_other=lp_other, kl=kl)


def head_importance(loaded: LoadedModel, token_ids: Sequence[int], n_prompt: int, scale: float = 0.0,
                    base_mask: Sequence = (), hidden: Sequence[int] = (),
                    job: JobContext | None = None) -> HeadImportance:
    """Scale each head in turn by `scale` and sum the change in log-probability of the generated tokens.

    The baseline is the run as it was made: `base_mask` and `hidden` positions applied; each head's
    scale is set on top of that mask. `job` hears JobProgress after each head; a stop ends the work
    between heads with JobCancelled, its partial result (`job.partial`) keeping the heads measured so
    far, the rest NaN and `completed` False.
    """
    job = job if job is not None else JobContext()
    model, info = loaded.model, loaded.info
    ids = _token_tensor(loaded, token_ids)
    T = ids.shape[1]
    if not 1 <= n_prompt < T:
        raise PromptError(f"Head importance needs generated tokens to score: the prompt length {n_prompt} "
                          f"must be between 1 and {T - 1} for this sequence of {T} tokens.")
    HeadScale.parse(layer=0, head=0, scale=scale)  # the same range check as a head mask's
    L, H = info.n_layers, info.n_heads
    targets = ids[0, n_prompt:]
    delta = np.full((L, H), np.nan, np.float32)

    base = normalize_head_mask(base_mask)
    check_head_mask(base, L, H, info.label)
    hidden = check_hidden_positions(hidden, n_prompt)

    def score(mask) -> torch.Tensor:
        with HeadMask(model, mask):
            return _target_logprobs(model, _final_states(model, ids, hidden, job)[n_prompt - 1:T - 1], targets)

    done = 0
    baseline = torch.tensor(float("nan"))

    def result(completed: bool) -> HeadImportance:
        return HeadImportance(delta=delta, baseline_logprob=float(baseline.double().sum()), completed=completed,
                              scale=float(scale), n_prompt=int(n_prompt))

    try:
        with torch.inference_mode():
            job.check()
            baseline = score(base)
            for layer in range(L):
                for head in range(H):
                    job.check()
                    # A later entry for the same head wins: this head's scale replaces the base's.
                    scaled = score(normalize_head_mask(base + (HeadScale(layer=layer, head=head, scale=scale),)))
                    delta[layer, head] = (scaled.double() - baseline.double()).sum().item()
                    done += 1
                    job.progress(done, L * H)
    except JobCancelled:
        job.set_partial(result(completed=False))  # the heads measured so far are kept; the rest stay NaN
        raise
    return result(completed=True)
