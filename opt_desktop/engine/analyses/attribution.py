"""Which input tokens made the model predict a token: input × gradient and integrated gradients.

The input is the token embeddings (the output of `embed_tokens`, before `project_in` and before the
positions are added, so positions stay fixed); the function is the target token's log-probability
at the last position, or its logit minus an alternative's. A token's score is its attribution summed
over the embedding dimension.

Integrated gradients integrate the gradient from a zero embedding to the real one with Captum's
default rule, Gauss-Legendre: alphas 0.5 (1 + x_i) and weights 0.5 w_i from numpy's leggauss, which
is what `captum.attr.IntegratedGradients(method="gausslegendre")` computes. Several alphas go
through the model as one batch, one forward and one backward per chunk.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..messages.errors import SettingsError
from ..messages.job_context import JobContext
from .grad_model import grad_model
from ..running.interventions import HeadMask, attention_inputs
from ..messages.interventions_spec import check_head_mask, check_hidden_positions, normalize_head_mask
from ..running.loaded import LoadedModel
from ..running.stopping import StopBetweenLayers
from ..messages.results import Attribution
from ..running.scoring import _token_tensor

METHODS = ("ixg", "ig")
MAX_STEPS = 512
# Activation memory one chunk of alphas may keep for its backward pass.
_CHUNK_BYTES = 512 * 2**20


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alphas in (0, 1), weights summing to 1) of Captum's "gausslegendre" rule with `steps` points."""
    x, w = np.polynomial.legendre.leggauss(steps)
    return 0.5 * (1.0 + x), 0.5 * w


def _alphas_per_chunk(config, n_tokens: int, element_size: int, steps: int) -> int:
    """How many alphas one forward/backward may carry: what autograd keeps per token and layer is about
    six hidden-size rows, two ffn-size rows and one attention row per head."""
    per_token = config.num_hidden_layers * (6 * config.hidden_size + 2 * config.ffn_dim
                                            + config.num_attention_heads * n_tokens) * element_size
    return int(max(1, min(steps, _CHUNK_BYTES // max(1, per_token * n_tokens))))


def _check_token(loaded: LoadedModel, token_id: int, what: str) -> int:
    vocab = loaded.info.vocab_size
    if not 0 <= int(token_id) < vocab:
        raise SettingsError(f"The {what} id {token_id} is outside this model's vocabulary of {vocab}.")
    return int(token_id)


def attribute(loaded: LoadedModel, token_ids: Sequence[int], target_id: int | None = None, *, method: str = "ig",
              steps: int = 32, alternative_id: int | None = None, head_mask: Sequence = (),
              hidden: Sequence[int] = (), job: JobContext | None = None) -> Attribution:
    """Attribute the prediction of `target_id` after `token_ids` to each of those tokens.

    `token_ids` is the whole input, the leading `</s>` included; the target is predicted from its
    last position. `target_id` None takes the model's greedy next token. With `alternative_id` the
    function is logit(target) - logit(alternative) instead of log p(target). `head_mask` and
    `hidden` (positions hidden from attention) are the run's interventions, applied throughout.
    `job` hears JobProgress in alphas and is checked between chunks and decoder layers.
    """
    job = job if job is not None else JobContext()
    if method not in METHODS:
        raise SettingsError(f"Unknown attribution method {method!r}: choose ixg (input × gradient) or ig "
                            "(integrated gradients).")
    if method == "ig" and not (isinstance(steps, int) and 1 <= steps <= MAX_STEPS):
        raise SettingsError(f"Integrated gradients need 1 to {MAX_STEPS} steps, not {steps}.")
    model, info = loaded.model, loaded.info
    ids = _token_tensor(loaded, token_ids)
    T = ids.shape[1]
    mask = normalize_head_mask(head_mask)
    check_head_mask(mask, info.n_layers, info.n_heads, info.label)
    hidden = check_hidden_positions(hidden, T, "sequence")
    if alternative_id is not None:
        alternative_id = _check_token(loaded, alternative_id, "alternative token")
    if target_id is not None:
        target_id = _check_token(loaded, target_id, "target token")
        if target_id == alternative_id:
            raise SettingsError("The alternative token must differ from the target token.")
    attn_mask, position_ids = attention_inputs(T, hidden, ids.device)

    job.check()
    # The model's own view of the target, in its own precision (what the Output view shows).
    with torch.inference_mode(), HeadMask(model, mask), StopBetweenLayers(model, job):
        state = model.model(input_ids=ids, attention_mask=attn_mask, position_ids=position_ids,
                            use_cache=False).last_hidden_state[:, -1]
        logp = torch.log_softmax(model.lm_head(state).float(), dim=-1)[0]
        if target_id is None:
            target_id = int(logp.argmax())
            if target_id == alternative_id:
                raise SettingsError("The alternative token must differ from the target token (the greedy one).")
        logprob = float(logp[target_id])
    del logp

    total = 1 if method == "ixg" else steps
    job.check()
    # Stop is also honoured before every decoder layer: a chunk of alphas can take seconds.
    with grad_model(model, info.n_params) as gm, HeadMask(gm.model, mask), StopBetweenLayers(gm.model, job):
        net = gm.model
        embeds = net.model.decoder.embed_tokens(ids).detach()  # (1, T, D)

        def objective(batch: torch.Tensor) -> torch.Tensor:
            """(k, T, D) embeddings -> (k,) float32 values of the attributed function."""
            k = batch.shape[0]
            out = net.model(inputs_embeds=batch, attention_mask=attn_mask.expand(k, T),
                            position_ids=None if position_ids is None else position_ids.expand(k, T),
                            use_cache=False).last_hidden_state[:, -1]
            logits = net.lm_head(out).float()
            if alternative_id is not None:
                return logits[:, target_id] - logits[:, alternative_id]
            return torch.log_softmax(logits, dim=-1)[:, target_id]

        def gradients(points: torch.Tensor) -> torch.Tensor:
            batch = points.requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(objective(batch).sum(), batch)
            return grad

        with torch.no_grad():
            ends = objective(torch.cat([embeds, torch.zeros_like(embeds)]))  # f(input), f(baseline)
        value, baseline_value = float(ends[0]), float(ends[1])
        if method == "ixg":
            grad_sum = gradients(embeds.clone()).double()[0]
            job.progress(1, 1)
        else:
            alphas, weights = gauss_legendre(steps)
            chunk = _alphas_per_chunk(net.config, T, embeds.element_size(), steps)
            grad_sum = torch.zeros(embeds.shape[1:], dtype=torch.float64, device=embeds.device)
            for i0 in range(0, steps, chunk):
                job.check()
                a = torch.as_tensor(alphas[i0:i0 + chunk], dtype=torch.float32, device=embeds.device)
                w = torch.as_tensor(weights[i0:i0 + chunk], dtype=torch.float64, device=embeds.device)
                # The baseline is zero: baseline + a (x - baseline) = a x, scaled in float32 (a half-precision
                # model gets the point rounded once, not its alpha too).
                grad = gradients((a[:, None, None] * embeds.float()).to(embeds.dtype))
                grad_sum += torch.einsum("k,ktd->td", w, grad.double())
                job.progress(min(steps, i0 + chunk), total)
        scores = (grad_sum * embeds[0].double()).sum(-1)
    return Attribution(
        token_ids=np.asarray(ids[0].cpu().numpy(), dtype=np.int64),
        scores=scores.float().cpu().numpy(),
        target_id=int(target_id),
        alternative_id=alternative_id,
        method=method,
        steps=steps if method == "ig" else None,
        logprob=logprob,
        value=value,
        baseline_value=baseline_value,
        gradient_dtype=gm.dtype,
        note=gm.note,
        head_mask=tuple(mask),
        hidden_positions=tuple(hidden),
    )
