"""The logit lens of every position of a finished run, from exact rows, in the background.

One teacher-forced pass over the run's tokens, fed a chunk of positions at a time through a KV
cache, with forward hooks on the input of decoder layer 0 (the embedding row) and on each decoder
layer's output. Those rows are the residual stream in the model's own precision (float32 for a
float32 model): the rows a run keeps for its live lens up to opt-350m, and beyond that the exact
versions of its float16 copies (see capture.residual_dtype). Each row is then read through the
head exactly as engine/running/lens.py reads one: final_layer_norm when the model has one, project_out
when it has one, lm_head.forward.

The pass respects the run's own interventions, as engine/running/scoring.py does: its hidden positions
(zeros in the attention mask, explicit position ids) and its head masks, including a mask changed
mid-run (`mask_schedule`: each position is fed under the mask it ran under when it was made).

The job hears JobProgress after each chunk (done and total in positions) and is checked between
chunks; a stopped job raises JobCancelled and leaves no partial table, so a stored table always
covers the whole run.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..running.attention import new_cache
from ..messages.errors import SettingsError
from ..messages.job_context import JobContext
from ..running.interventions import HeadMask
from ..messages.interventions_spec import check_head_mask, check_hidden_positions, normalize_head_mask
from ..running.lens import head_device, read_through_head
from ..running.loaded import LoadedModel
from ..messages.results import LensTable
from ..running.scoring import _token_tensor
from ..running.text import token_piece

DEFAULT_TOP_K = 5
CHUNK = 64  # positions fed per forward; also the rows read through the head at a time

MaskSchedule = Sequence[tuple[int, Sequence]]  # (first position, head mask) pairs, positions increasing


class _Rows:
    """Forward hooks that keep each hidden-state row of the positions being fed."""

    def __init__(self, model):
        self.layers = list(model.model.decoder.layers)
        self.rows: list[torch.Tensor | None] = [None] * (len(self.layers) + 1)
        self._handles: list = []

    def __enter__(self) -> "_Rows":
        self._handles.append(self.layers[0].register_forward_pre_hook(self._embed, with_kwargs=True))
        for i, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_hook(self._layer(i + 1)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _embed(self, module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        self.rows[0] = h[0]
        return None

    def _layer(self, row: int):
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            self.rows[row] = h[0]

        return hook


def _segments(T: int, schedule: list[tuple[int, tuple]], chunk: int) -> list[tuple[int, int, tuple]]:
    """(start, end, mask) pieces of at most `chunk` positions, split where the mask changes."""
    bounds = [(max(0, min(p, T)), mask) for p, mask in schedule]
    out = []
    for j, (start, mask) in enumerate(bounds):
        end = bounds[j + 1][0] if j + 1 < len(bounds) else T
        for a in range(start, end, chunk):
            out.append((a, min(end, a + chunk), mask))
    return out


def _schedule(mask_schedule: MaskSchedule, n_layers: int, n_heads: int, label: str) -> list[tuple[int, tuple]]:
    out: list[tuple[int, tuple]] = []
    for position, mask in mask_schedule:
        position = int(position)
        if out and position <= out[-1][0]:
            raise SettingsError("The head-mask schedule must list increasing positions.")
        normal = normalize_head_mask(mask)
        check_head_mask(normal, n_layers, n_heads, label)
        out.append((position, normal))
    if not out or out[0][0] != 0:
        out.insert(0, (0, ()))
    return out


def lens_table(loaded: LoadedModel, token_ids: Sequence[int], *, hidden_positions: Sequence[int] = (),
               mask_schedule: MaskSchedule = ((0, ()),), top_k: int = DEFAULT_TOP_K, chunk: int = CHUNK,
               job: JobContext | None = None) -> LensTable:
    """The logit lens of every row and position of `token_ids` (a run's prompt and generated tokens).

    Raises JobCancelled when `job` is stopped (checked between chunks), PromptError for tokens the
    model cannot read, SettingsError for interventions it does not have.
    """
    job = job if job is not None else JobContext()
    model, info = loaded.model, loaded.info
    ids = _token_tensor(loaded, token_ids)
    T = ids.shape[1]
    L = info.n_layers
    if not 1 <= top_k <= 100:
        raise SettingsError(f"The lens keeps from 1 to 100 tokens per row, not {top_k}.")
    hidden = check_hidden_positions(hidden_positions, T, "sequence")
    schedule = _schedule(mask_schedule, L, info.n_heads, info.label)
    pieces = _segments(T, schedule, max(1, int(chunk)))

    top_ids = np.zeros((L + 1, T, top_k), np.int64)
    top_probs = np.full((L + 1, T, top_k), np.nan, np.float32)
    target_logprob = np.full((L + 1, T), np.nan, np.float32)
    target_rank = np.zeros((L + 1, T), np.int64)

    device = ids.device
    attention_mask = torch.ones(1, T, dtype=torch.long, device=device)
    if hidden:
        attention_mask[0, list(hidden)] = 0
    cache = new_cache(model.config)
    out_device = head_device(model)
    compute_dtype = model.model.decoder.embed_tokens.weight.dtype
    with torch.inference_mode(), HeadMask(model, schedule[0][1]) as head_mask, _Rows(model) as rows:
        for a, b, mask in pieces:
            job.check()
            if mask != head_mask.mask:
                head_mask.set(mask)
            position_ids = torch.arange(a, b, device=device).unsqueeze(0)
            model.model.decoder(input_ids=ids[:, a:b], attention_mask=attention_mask[:, :b], cache=cache,
                                use_cache=True, position_ids=position_ids)
            # The token each position predicts: the next one (the last position has none).
            targets = ids[0, a + 1:b + 1].to(out_device)
            n_targets = targets.shape[0]
            for r, row in enumerate(rows.rows):
                x = row.to(device=out_device, dtype=compute_dtype)
                logp = torch.log_softmax(read_through_head(model, x).float(), dim=-1)  # (q, V)
                lp, tid = logp.topk(top_k, dim=-1)
                top_ids[r, a:b] = tid.cpu().numpy()
                top_probs[r, a:b] = lp.exp().cpu().numpy()
                if n_targets:
                    tgt = logp[:n_targets].gather(-1, targets.unsqueeze(-1)).squeeze(-1)
                    target_logprob[r, a:a + n_targets] = tgt.cpu().numpy()
                    target_rank[r, a:a + n_targets] = ((logp[:n_targets] > tgt.unsqueeze(-1)).sum(-1) + 1).cpu().numpy()
                del logp
            rows.rows = [None] * (L + 1)
            job.progress(b, T)
    tokenizer = loaded.tokenizer
    known = {int(i): token_piece(tokenizer, int(i)) for i in np.unique(top_ids)} if tokenizer is not None else {}
    return LensTable(top_ids=top_ids, top_probs=top_probs, target_logprob=target_logprob, target_rank=target_rank,
                     pieces=known)
