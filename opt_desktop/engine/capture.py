"""Hooks that reduce OPT's internals to statistics while the model runs.

Attention weights arrive block by block from the engine's chunked eager attention (see
attention.py) through a sink set on each layer's `self_attn`; each block is reduced (or copied to
float16, when asked) and freed at once, so peak memory grows with one block of queries, never
with L x H x T x T. The residual stream is read with forward hooks on the decoder layers
themselves, because transformers' last `hidden_states` entry has already been through
`final_layer_norm` and `project_out`.
"""

from __future__ import annotations

import numpy as np
import torch

from .attention import SINK_ATTRIBUTE
from .events import ATTENTION_STATS, HIDDEN_STATS, StepStats
from .settings import InspectSettings
from .stopping import raise_if_stopped

_PROMPT_CHUNK = 32  # prompt rows per vocabulary projection when scoring the prompt


def hidden_stats(x: torch.Tensor) -> torch.Tensor:
    """(..., D) -> (5, ...): norm, mean, std (population), max |x|, argmax |x| (as float)."""
    x = x.float()
    maxabs, argmax = x.abs().max(dim=-1)
    std, mean = torch.std_mean(x, dim=-1, correction=0)
    return torch.stack([torch.linalg.vector_norm(x, dim=-1), mean, std, maxabs, argmax.float()])


def attention_stats(w: torch.Tensor, offset: int) -> torch.Tensor:
    """(..., q, k) attention weights of queries offset..offset+q-1 -> (3, ..., q): entropy, sink, distance."""
    w = w.float()
    q, k = w.shape[-2:]
    entropy = -(w * w.clamp_min(1e-45).log()).sum(-1)  # 0·log 0 = 0; ~3x faster than xlogy
    sink = w[..., 0]
    query_pos = torch.arange(offset, offset + q, device=w.device, dtype=w.dtype)
    key_pos = torch.arange(k, device=w.device, dtype=w.dtype)
    # sum_k w_k (t - k) = t * sum_k w_k - sum_k w_k k; the weights sum to 1 up to rounding
    distance = query_pos * w.sum(-1) - w @ key_pos
    return torch.stack([entropy, sink, distance])


def distribution_stats(logits: torch.Tensor, targets: torch.Tensor | None, top_k: int):
    """Raw next-token distribution(s) (..., V) -> log-softmax summaries, all as float32 tensors.

    Returns (entropy, target_logprob, target_rank, top_logprobs, top_ids); target_* are None without targets.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    top_lp, top_ids = logp.topk(top_k, dim=-1)
    if targets is None:
        return entropy, None, None, top_lp, top_ids
    tgt = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    rank = (logp > tgt.unsqueeze(-1)).sum(-1) + 1
    return entropy, tgt, rank, top_lp, top_ids


class Capture:
    """Hooks on one OPT model for one run. Use as a context manager; `take_step(start)` after each forward."""

    def __init__(self, model, inspect: InspectSettings, prompt_ids: torch.Tensor, stop=None):
        self.model = model
        self.decoder = model.model.decoder
        self.layers = list(self.decoder.layers)
        self.inspect = inspect
        self.prompt_ids = prompt_ids  # (P,) on the model's device
        self.stop = stop  # threading.Event: scoring a long prompt is seconds of chunks, each a place to stop
        self.n_layers = len(self.layers)
        self._handles: list = []
        self._reset()
        self.last_logits: torch.Tensor | None = None
        self.prompt_scores = None  # set by the first (prefill) forward: see _score_prompt

    def _reset(self) -> None:
        L = self.n_layers
        self._hidden: list = [None] * (L + 1)  # per row: stats (5, q) when reduced, else the (q, D) tensor
        self._residual: list = [None] * (L + 1)
        self._attn: list[list] = [[] for _ in range(L)]  # per layer: reduced blocks, or the raw decode row
        self._rows: list[list] = [[] for _ in range(L)]
        self._decode_step = False  # one query position: per-layer tensors are stacked, then reduced once

    # --- hook management ----------------------------------------------------------------------

    def __enter__(self) -> "Capture":
        ins = self.inspect
        need_hidden = ins.hidden_stats or ins.keep_residuals
        self._handles.append(self.layers[0].register_forward_pre_hook(self._on_layer0_input, with_kwargs=True))
        if need_hidden:
            for i, layer in enumerate(self.layers):
                self._handles.append(layer.register_forward_hook(self._make_layer_hook(i + 1)))
        if ins.attention_stats or ins.keep_attention_rows:
            for i, layer in enumerate(self.layers):
                setattr(layer.self_attn, SINK_ATTRIBUTE, self._make_attn_sink(i))
        self._handles.append(self.decoder.register_forward_hook(self._on_decoder_output))
        self._handles.append(self.model.lm_head.register_forward_hook(self._on_logits))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for layer in self.layers:
            if hasattr(layer.self_attn, SINK_ATTRIBUTE):
                delattr(layer.self_attn, SINK_ATTRIBUTE)

    # --- hooks --------------------------------------------------------------------------------

    def _on_layer0_input(self, module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        self._decode_step = h.shape[1] == 1
        if self.inspect.hidden_stats or self.inspect.keep_residuals:
            self._record_hidden(0, h)
        return None

    def _make_layer_hook(self, row: int):
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            self._record_hidden(row, h)

        return hook

    def _record_hidden(self, row: int, h: torch.Tensor) -> None:
        h = h[0]  # (q, D); the engine runs batch 1
        if self.inspect.keep_residuals:
            self._residual[row] = h.to(torch.float16)
        if self.inspect.hidden_stats:
            # Decode steps are batched over layers in take_step; a long prefill is reduced at once.
            self._hidden[row] = h if self._decode_step else hidden_stats(h)

    def _make_attn_sink(self, layer: int):
        def sink(weights: torch.Tensor, first_query: int) -> None:
            w = weights[0]  # (H, q_block, k)
            if self.inspect.keep_attention_rows:
                self._rows[layer].append(w.to(torch.float16).cpu().numpy())
            if self.inspect.attention_stats:
                # Decode rows are stacked over layers and reduced once in take_step.
                self._attn[layer].append(w if self._decode_step else attention_stats(w, first_query))

        return sink

    def _on_decoder_output(self, module, args, output):
        if self.prompt_scores is None:  # the first forward of a run is the prefill
            self._score_prompt(output.last_hidden_state[0])

    def _on_logits(self, module, args, output):
        self.last_logits = output[0, -1]

    def _score_prompt(self, final_hidden: torch.Tensor) -> None:
        """Prompt surprisal: token t under the raw distribution at t-1, from the prefill's final states."""
        P = final_hidden.shape[0]
        K = self.inspect.top_alternatives
        entropy = torch.full((P,), float("nan"))
        logprob = torch.full((P,), float("nan"))
        rank = torch.zeros(P, dtype=torch.long)
        top_ids = torch.zeros(P, K, dtype=torch.long)
        top_probs = torch.full((P, K), float("nan"))
        head = self.model.lm_head
        for i0 in range(0, P - 1, _PROMPT_CHUNK):
            raise_if_stopped(self.stop)
            i1 = min(P - 1, i0 + _PROMPT_CHUNK)
            # head.forward, not head(...): this extra projection must not look like a generation step to
            # hooks, yet it runs the precision mode's own head and accelerate's device/offload wrapper.
            logits = head.forward(final_hidden[i0:i1])
            targets = self.prompt_ids[i0 + 1:i1 + 1].to(logits.device)
            ent, tgt, rk, top_lp, top_id = distribution_stats(logits, targets, K)
            entropy[i0 + 1:i1 + 1] = ent.cpu()
            logprob[i0 + 1:i1 + 1] = tgt.cpu()
            rank[i0 + 1:i1 + 1] = rk.cpu()
            top_ids[i0 + 1:i1 + 1] = top_id.cpu()
            top_probs[i0 + 1:i1 + 1] = top_lp.exp().cpu()
        self.prompt_scores = (logprob.numpy(), entropy.numpy(), rank.numpy(), top_ids.numpy(), top_probs.numpy())

    # --- per step -----------------------------------------------------------------------------

    def take_step(self, start: int) -> StepStats:
        """Everything captured since the last call, for positions start..start+q-1, as numpy."""
        hidden: dict[str, np.ndarray] = {}
        attention: dict[str, np.ndarray] = {}
        if self.inspect.hidden_stats and self._hidden[0] is not None:
            if self._decode_step:  # raw (1, D) rows, reduced together
                stats = hidden_stats(torch.stack(self._hidden))  # (5, L+1, 1)
            else:
                stats = torch.stack(self._hidden, 1)  # (5, L+1, q), reduced in the hooks
            arr = stats.cpu().numpy()
            for j, name in enumerate(HIDDEN_STATS):
                hidden[name] = arr[j].astype(np.int64) if name == "argmax" else arr[j]
        if self.inspect.attention_stats and self._attn[0]:
            if self._decode_step:  # raw (H, 1, k) weights, reduced together
                raw = torch.stack([parts[0] for parts in self._attn])  # (L, H, 1, k)
                stats = attention_stats(raw, raw.shape[-1] - 1)  # (3, L, H, 1)
            else:
                stats = torch.stack([torch.cat(parts, -1) for parts in self._attn], 1)  # (3, L, H, q)
            arr = stats.cpu().numpy()
            for j, name in enumerate(ATTENTION_STATS):
                attention[name] = arr[j]
        residual = None
        if self.inspect.keep_residuals and self._residual[0] is not None:
            residual = torch.stack(self._residual).cpu().numpy()  # (L+1, q, D)
        rows = None
        if self.inspect.keep_attention_rows and self._rows[0]:
            rows = tuple(np.concatenate(parts, axis=1) for parts in self._rows)  # per layer (H, q, k)
        self._reset()
        return StepStats(start=start, hidden=hidden, attention=attention, residual=residual, attention_rows=rows)
