"""Activation patching (causal tracing): which hidden states and heads of a clean run restore its
prediction when copied into a corrupted run of the same length.

Both runs are first made once with hooks that keep every hidden-state row (`embed` = the input of
decoder layer 0, then each layer's output) and each layer's `self_attn.out_proj` input (the heads'
outputs, side by side). A patch at row r changes nothing before decoder layer r, so each patched
forward starts there: from the corrupted run's row r with the clean value put in, through layers
r … L-1 (called with the very keyword arguments the decoder passed them: its attention mask and
positions), the decoder's tail (final_layer_norm, project_out) and the output head at the last
position. That halves the work of full forwards. A head patch starts at its layer, with a pre-hook
on that layer's `out_proj` swapping in the clean run's slice of the head in every position.
Several patches go through as one batch; int8 layers quantise a whole batch with one scale, so there
they go one at a time and each comes out as its own full forward would.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch

from ..messages.errors import PromptError, SettingsError
from ..messages.job_context import JobContext
from .grad_model import has_int8_layers
from ..running.interventions import HeadMask, attention_inputs
from ..messages.interventions_spec import check_head_mask, check_hidden_positions, normalize_head_mask
from ..running.loaded import LoadedModel
from ..running.stopping import StopBetweenLayers
from ..messages.results import Patching
from ..running.scoring import _token_tensor

_BATCH_TOKENS = 2048  # tokens per patched forward (patches x sequence length)


def _output(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


class _Run:
    """One unpatched forward, with every residual row, every layer's out_proj input and the keyword
    arguments the decoder gave its layers."""

    def __init__(self, model, ids: torch.Tensor, attention_mask, position_ids, target_id: int, heads: bool):
        layers = model.model.decoder.layers
        self.rows: list[torch.Tensor] = [None] * (len(layers) + 1)  # each (T, hidden)
        self.head_inputs: list[torch.Tensor] = [None] * len(layers)  # each (T, hidden)
        self.layer_kwargs: dict = {}
        handles = []

        def on_input(module, args, kwargs):
            self.rows[0] = (args[0] if args else kwargs["hidden_states"])[0]
            self.layer_kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}

        def on_output(row):
            def hook(module, args, output):
                self.rows[row] = _output(output)[0]
            return hook

        def on_heads(layer):
            def hook(module, args):
                self.head_inputs[layer] = args[0][0]
            return hook

        try:
            handles.append(layers[0].register_forward_pre_hook(on_input, with_kwargs=True))
            for i, layer in enumerate(layers):
                handles.append(layer.register_forward_hook(on_output(i + 1)))
                if heads:
                    handles.append(layer.self_attn.out_proj.register_forward_pre_hook(on_heads(i)))
            final = model.model(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids,
                                use_cache=False).last_hidden_state
        finally:
            for h in handles:
                h.remove()
        self.prob = float(_target_probs(model, final, target_id)[0])


def _target_probs(model, final: torch.Tensor, target_id: int) -> torch.Tensor:
    """(k,) probability of the target at the last position of (k, T, D) final states."""
    logits = model.lm_head.forward(final[:, -1])
    return torch.softmax(logits.float(), dim=-1)[:, target_id].cpu()


def _from_layer(model, start: int, hidden: torch.Tensor, layer_kwargs: dict, target_id: int) -> torch.Tensor:
    """Run decoder layers start … L-1 on (k, T, hidden) residuals; the target's probability per row."""
    decoder = model.model.decoder
    for layer in decoder.layers[start:]:
        hidden = _output(layer(hidden, **layer_kwargs))
    # The decoder's own tail over every position, as in a full forward: an int8 project_out quantises
    # its whole input with one scale, so the last row alone would come out a little different.
    if decoder.final_layer_norm is not None:
        hidden = decoder.final_layer_norm(hidden)
    if decoder.project_out is not None:
        hidden = decoder.project_out(hidden)
    return _target_probs(model, hidden, target_id)


@contextmanager
def _swap_heads(out_proj, clean: torch.Tensor, select: torch.Tensor):
    """A pre-hook on `out_proj` putting the clean run's input where `select` (k, 1, hidden) is True."""

    def hook(module, args):
        x = args[0]  # on the layer's own device when accelerate spread the model
        return (torch.where(select.to(x.device), clean.to(device=x.device, dtype=x.dtype), x),) + tuple(args[1:])

    handle = out_proj.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def patch(loaded: LoadedModel, clean_ids: Sequence[int], corrupt_ids: Sequence[int], target_id: int, *,
          heads: bool = True, head_mask: Sequence = (), hidden: Sequence[int] = (),
          job: JobContext | None = None) -> Patching:
    """Patch every (row, position) of the clean run, and every head when `heads`, into the corrupted run.

    Both id lists are whole inputs with their leading `</s>`, of the same length; the target is the
    token predicted from the last position. `head_mask` and `hidden` (positions hidden from
    attention) apply to both runs. `job` hears JobProgress in patches and is checked between batches
    and decoder layers.
    """
    job = job if job is not None else JobContext()
    model, info = loaded.model, loaded.info
    clean = _token_tensor(loaded, clean_ids)
    corrupt = _token_tensor(loaded, corrupt_ids)
    if clean.shape[1] != corrupt.shape[1]:
        raise PromptError(f"The clean prompt is {clean.shape[1]} tokens long and the corrupted one "
                          f"{corrupt.shape[1]}: patching needs prompts of the same length.")
    if not 0 <= int(target_id) < info.vocab_size:
        raise SettingsError(f"The target token id {target_id} is outside this model's vocabulary of "
                            f"{info.vocab_size}.")
    target_id = int(target_id)
    T = clean.shape[1]
    L, H = info.n_layers, info.n_heads
    mask = normalize_head_mask(head_mask)
    check_head_mask(mask, L, H, info.label)
    hidden = check_hidden_positions(hidden, T, "prompt")
    attn_mask, position_ids = attention_inputs(T, hidden, clean.device)

    prob = np.full((L + 1, T), np.nan, np.float32)
    head_prob = np.full((L, H) if heads else (0, 0), np.nan, np.float32)
    total = (L + 1) * T + (L * H if heads else 0)
    # int8 layers quantise a whole batch with one scale: one patch per forward keeps each patch exact.
    per_batch = 1 if has_int8_layers(model) else max(1, _BATCH_TOKENS // T)
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        job.progress(done, total)

    job.check()
    # Stop is also honoured before every decoder layer: a batch of patched forwards can take seconds.
    with torch.inference_mode(), HeadMask(model, mask), StopBetweenLayers(model, job):
        clean_run = _Run(model, clean, attn_mask, position_ids, target_id, heads)
        corrupt_run = _Run(model, corrupt, attn_mask, position_ids, target_id, heads)
        kwargs = corrupt_run.layer_kwargs
        for row in range(L + 1):
            base, source = corrupt_run.rows[row], clean_run.rows[row]
            for t0 in range(0, T, per_batch):
                job.check()
                ts = torch.arange(t0, min(T, t0 + per_batch), device=base.device)
                states = base.unsqueeze(0).repeat(len(ts), 1, 1)
                states[torch.arange(len(ts), device=base.device), ts] = source[ts]
                prob[row, t0:t0 + len(ts)] = _from_layer(model, row, states, kwargs, target_id).numpy()
                advance(len(ts))
        if heads:
            d = info.hidden_size // H
            for layer in range(L):
                out_proj = model.model.decoder.layers[layer].self_attn.out_proj
                base = corrupt_run.rows[layer]
                for h0 in range(0, H, per_batch):
                    job.check()
                    hs = range(h0, min(H, h0 + per_batch))
                    select = torch.zeros(len(hs), 1, info.hidden_size, dtype=torch.bool, device=base.device)
                    for j, h in enumerate(hs):
                        select[j, 0, h * d:(h + 1) * d] = True
                    states = base.unsqueeze(0).repeat(len(hs), 1, 1)
                    with _swap_heads(out_proj, clean_run.head_inputs[layer], select):
                        head_prob[layer, h0:h0 + len(hs)] = _from_layer(model, layer, states, kwargs, target_id).numpy()
                    advance(len(hs))
    return Patching(clean_ids=np.asarray(clean[0].cpu().numpy(), np.int64),
                    corrupt_ids=np.asarray(corrupt[0].cpu().numpy(), np.int64), target_id=target_id,
                    clean_prob=clean_run.prob, corrupt_prob=corrupt_run.prob, prob=prob, head_prob=head_prob,
                    head_mask=tuple(mask), hidden_positions=tuple(hidden))

