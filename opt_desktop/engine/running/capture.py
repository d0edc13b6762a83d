"""Hooks that reduce OPT's internals to statistics while the model runs.

A decode step (one new token) is reduced as it runs: the residual stream is read with forward
hooks on the decoder layers themselves (transformers' last `hidden_states` entry has already been
through `final_layer_norm` and `project_out`), and the attention weights arrive from the engine's
attention (attention.py) through a sink set on each layer's `self_attn`.

The prompt is different: its statistics are not on the way to the first token. During the prefill
the hooks only keep references to the residual rows (no copy: the model made them anyway) and to
each layer's keys and mask; `finish_prompt()`, called after the first token, turns them into
statistics: each layer's queries are recomputed from its input row by the layer's own modules,
the attention weights are recomputed from them a block of queries at a time, and every prompt
position is read through the output head. Peak memory grows with the float32 residual rows (about
half the KV cache), never with L x H x T x T. A model spread over devices by accelerate (its
layers' weights may be on disk between forwards) reduces its prompt's attention in the prefill
instead, from the queries the attention is given.
"""

from __future__ import annotations

import numpy as np
import torch

from .attention import SINK_ATTRIBUTE, layer_queries, weight_blocks
from ..messages.events import ATTENTION_STATS, HIDDEN_STATS, StepStats
from .role_stats import InductionTargets, induction_pairs, role_stats
from .scratch import Scratch
from ..messages.settings import InspectSettings
from ..messages.job_context import JobContext

_PROMPT_CHUNK = 128  # prompt rows per vocabulary projection: 128 x 50k float32 logits, 26 MB


def hidden_stats(x: torch.Tensor, scratch: Scratch | None = None) -> torch.Tensor:
    """(..., D) -> (5, ...): norm, mean, std (population), max |x|, argmax |x| (as float).
    With `scratch`, the two (..., D) temporaries go into its buffers (a long prompt's rows)."""
    x = x.float()
    work = (lambda: None) if scratch is None else (lambda: scratch.get("hidden", x.shape, x.dtype, x.device))
    maxabs, argmax = torch.abs(x, out=work()).max(dim=-1)
    mean = x.mean(dim=-1)
    # Two passes (the norm of x - mean), as exact as torch.std_mean and 5x faster on a CPU.
    std = torch.linalg.vector_norm(torch.sub(x, mean.unsqueeze(-1), out=work()), dim=-1) / x.shape[-1] ** 0.5
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


def prompt_attention_stats(weights: torch.Tensor, scores: torch.Tensor, offset: int) -> torch.Tensor:
    """attention_stats from float32 (H, q, k) weights and the scores they are the softmax of, in
    fewer passes over the block (a long prompt's cost): no logarithm per weight. Overwrites `scores`.

    log w_k = s_k - lse, so entropy = lse - sum_k w_k s_k, with lse = s_j - log w_j read at the
    largest weight (at least 1/k, so its logarithm is exact to float32). Hidden keys have w = 0 and
    a finite lowest score: they add nothing."""
    # The largest weight sits at the largest score (softmax keeps order): two plain maxima, no indices.
    lse = scores.amax(dim=-1) - weights.amax(dim=-1).log()
    entropy = lse - scores.mul_(weights).sum(-1)
    key_pos = torch.arange(weights.shape[-1], device=weights.device, dtype=weights.dtype)
    query_pos = torch.arange(offset, offset + weights.shape[-2], device=weights.device, dtype=weights.dtype)
    # As attention_stats; a matrix-vector product (a (k, 2) right-hand side is 10x slower on a CPU).
    distance = query_pos * weights.sum(-1) - weights @ key_pos
    return torch.stack([entropy, weights[..., 0], distance])


def prompt_distribution_stats(logits: torch.Tensor, targets: torch.Tensor, top_k: int,
                              scratch: Scratch | None = None):
    """distribution_stats for many rows at once, in fewer passes over the (n, V) logits, its
    temporaries in `scratch`'s buffers.

    The same summaries from one softmax: log p = x - lse, lse = x_max - log p_max, entropy =
    lse - sum p x; ranks compare the raw logits (the same order as their log-probabilities)."""
    scratch = scratch if scratch is not None else Scratch()
    x = logits if logits.dtype == torch.float32 else scratch.get("x", logits.shape, torch.float32,
                                                                  logits.device).copy_(logits)
    top, top_ids = x.topk(top_k, dim=-1)
    target = x.gather(-1, targets.unsqueeze(-1))
    rank = _count_above(x, target, scratch.get("above", x.shape, x.dtype, x.device)) + 1
    p = torch.ops.aten._softmax.out(x, -1, False, out=scratch.get("p", x.shape, x.dtype, x.device))
    lse = top[:, 0] - p.gather(-1, top_ids[:, :1]).squeeze(-1).log()
    entropy = lse - p.mul_(x).sum(-1)
    return entropy, target.squeeze(-1) - lse, rank, (top - lse.unsqueeze(-1)).exp(), top_ids


def _count_above(x: torch.Tensor, threshold: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """How many entries of each row of x exceed its threshold, as int64. Counted as float32 0/1 sums,
    exact below 2**24 entries a row (a vocabulary is far smaller): on a CPU 4-10x faster than summing
    the boolean comparison."""
    above = torch.gt(x, threshold, out=torch.empty_like(x) if out is None else out)
    return above.sum(-1).long()


def head_logits(head, rows: torch.Tensor, scratch: Scratch) -> torch.Tensor:
    """`head.forward(rows)`; a plain float32 output head (no bias, not wrapped by accelerate) writes
    into `scratch` instead of a fresh (n, V) tensor."""
    weight = getattr(head, "weight", None)
    if (type(head) is torch.nn.Linear and head.bias is None and weight.dtype == torch.float32
            and rows.dtype == torch.float32 and not hasattr(head, "_hf_hook")):
        out = scratch.get("logits", (rows.shape[0], weight.shape[0]), weight.dtype, weight.device)
        return torch.matmul(rows, weight.t(), out=out)  # what F.linear does, into a reused buffer
    # head.forward, not head(...): this extra projection must not look like a generation step to
    # hooks, yet it runs the precision mode's own head and accelerate's device/offload wrapper.
    return head.forward(rows)


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
    rank = _count_above(logp, tgt.unsqueeze(-1)) + 1
    return entropy, tgt, rank, top_lp, top_ids


# Kept residual rows stay float32 (exact: the lens reads what the model computed) while a whole
# context of them fits in this; beyond it (opt-1.3b and up) they are kept in float16, and the lens
# table computed after the run (engine/analyses/lens_table.py) is the exact one.
EXACT_RESIDUAL_BYTES = 256 * 2**20


def residual_dtype(config) -> torch.dtype:
    """float32 when (layers + 1) x context x hidden float32 rows fit EXACT_RESIDUAL_BYTES, else float16."""
    rows = (config.num_hidden_layers + 1) * config.max_position_embeddings * config.hidden_size * 4
    return torch.float32 if rows <= EXACT_RESIDUAL_BYTES else torch.float16


class Capture:
    """Hooks on one OPT model for one run. Use as a context manager; after the first forward (the
    prefill) call `finish_prompt()`, then `take_step(0)`; after each later forward, `take_step(start)`."""

    def __init__(self, model, inspect: InspectSettings, prompt_ids: torch.Tensor, job: JobContext | None = None):
        self.model = model
        self.decoder = model.model.decoder
        self.layers = list(self.decoder.layers)
        self.inspect = inspect
        self.prompt_ids = prompt_ids  # (P,) on the model's device
        # Every id fed so far (the prompt, then each decode step's token), read off the decoder's
        # input: the induction statistic's targets. None when a forward was fed embeddings instead.
        self._ids: torch.Tensor | None = prompt_ids[:0]
        self._prompt_targets: InductionTargets | None = None  # the prompt's, found at its first block
        self.job = job if job is not None else JobContext()  # the prompt's statistics are seconds of blocks, each a place to stop
        self.n_layers = len(self.layers)
        self.residual_dtype = residual_dtype(model.config)
        # The prompt is reduced after the first token, its queries recomputed from each layer's input,
        # unless accelerate spread the model (a layer's weights may then be on disk outside its
        # forward, and memory is what is short): then it is reduced during the prefill, as it runs.
        self.defer_prompt = not getattr(model, "hf_device_map", None)
        self._handles: list = []
        self._reset()
        self.last_logits: torch.Tensor | None = None
        self.prompt_scores = None  # set by finish_prompt(): see _score_prompt
        self._final_hidden: torch.Tensor | None = None  # the prefill's decoder output, for prompt scoring
        self._prompt_rows: list = [None] * (self.n_layers + 1)  # float32 residual rows (1, P, D) of the prefill
        self._prompt_keys: list = [None] * self.n_layers  # per layer: (key, mask, first query, scaling)
        self._scratch = Scratch()  # work buffers of the prompt's statistics, freed when they are done

    def _reset(self) -> None:
        L = self.n_layers
        self._hidden: list = [None] * (L + 1)  # per row: stats (5, q) when reduced, else the (q, D) tensor
        # (L+1, q, D) on the CPU, filled a row at a time: the rows are copied in as they are
        # reduced and let go, so a long prompt never holds its rows twice.
        self._residual: torch.Tensor | None = None
        self._attn: list[list] = [[] for _ in range(L)]  # per layer: reduced blocks, or the raw decode row
        self._rows: list[list] = [[] for _ in range(L)]
        self._decode_step = False  # one query position: per-layer tensors are stacked, then reduced once

    @property
    def _wants_attention(self) -> bool:
        return self.inspect.attention_stats or self.inspect.keep_attention_rows

    # --- hook management ----------------------------------------------------------------------

    def __enter__(self) -> "Capture":
        ins = self.inspect
        rows = ins.hidden_stats or ins.keep_residuals or (self._wants_attention and self.defer_prompt)
        self._handles.append(self.layers[0].register_forward_pre_hook(self._on_layer0_input, with_kwargs=True))
        if rows:
            for i, layer in enumerate(self.layers):
                self._handles.append(layer.register_forward_hook(self._make_layer_hook(i + 1)))
        if self._wants_attention:
            for i, layer in enumerate(self.layers):
                setattr(layer.self_attn, SINK_ATTRIBUTE, _AttentionSink(self, i))
        if self._wants_attention:
            self._handles.append(self.decoder.register_forward_pre_hook(self._on_decoder_input, with_kwargs=True))
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
        self._prompt_rows = [None] * (self.n_layers + 1)
        self._prompt_keys = [None] * self.n_layers
        self._final_hidden = None
        self._prompt_targets = None
        self._scratch.clear()

    # --- hooks --------------------------------------------------------------------------------

    def _on_layer0_input(self, module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        self._decode_step = h.shape[1] == 1
        if self.inspect.hidden_stats or self.inspect.keep_residuals or (self._wants_attention and self.defer_prompt):
            self._record_hidden(0, h)
        return None

    def _make_layer_hook(self, row: int):
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            self._record_hidden(row, h)

        return hook

    def _record_hidden(self, row: int, h: torch.Tensor) -> None:
        if self.defer_prompt and not self._decode_step and self.prompt_scores is None:
            # The prefill: kept as it is (no copy), reduced by finish_prompt(). The last row is no
            # layer's input, so it is needed only for its own statistics.
            if row < self.n_layers or self.inspect.hidden_stats or self.inspect.keep_residuals:
                if self.inspect.keep_residuals and h.dtype == self.residual_dtype and h.device.type == "cpu":
                    # Kept in the run's residual array at once (a copy the run keeps anyway), so
                    # the prompt's rows are held once, not twice, until its statistics are done.
                    h = self._keep_residual(row, h[0])[None]
                self._prompt_rows[row] = h
            return
        self._reduce_hidden(row, h[0])

    def _reduce_hidden(self, row: int, h: torch.Tensor, scratch: Scratch | None = None) -> None:
        """h (q, D): the engine runs batch 1."""
        if self.inspect.keep_residuals:
            self._keep_residual(row, h)
        if self.inspect.hidden_stats:
            # Decode steps are batched over layers in take_step; a prompt is reduced row by row.
            self._hidden[row] = h if self._decode_step else hidden_stats(h, scratch)

    def _keep_residual(self, row: int, h: torch.Tensor) -> torch.Tensor:
        """Row `row` (q, D) of the step's residual array, filled from h unless it is already there."""
        if self._residual is None:
            self._residual = torch.empty((self.n_layers + 1, *h.shape), dtype=self.residual_dtype)
        kept = self._residual[row]
        if kept.data_ptr() != h.data_ptr():
            kept.copy_(h)
        return kept

    def _on_decoder_input(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None or self._ids is None:
            self._ids = None
        else:
            self._ids = torch.cat([self._ids, ids[0].to(self._ids.device)])
        return None

    def _on_decoder_output(self, module, args, output):
        if self.prompt_scores is None and self._final_hidden is None:  # the first forward of a run is the prefill
            self._final_hidden = output.last_hidden_state[0]

    def _on_logits(self, module, args, output):
        self.last_logits = output[0, -1]

    # --- the prompt, after the first token ----------------------------------------------------

    def finish_prompt(self) -> None:
        """The prompt's statistics from what the prefill left: residual rows, keys, final states.

        Layer by layer, so each row is reduced (and kept, see residual_dtype) and let go as soon as
        its layer's attention is done with it; then the vocabulary at every position."""
        for layer in range(self.n_layers):
            self.job.check()
            pending = self._prompt_keys[layer]
            if pending is not None:
                key, mask, first_query, scaling = pending
                query = layer_queries(self.layers[layer], self._prompt_rows[layer])
                self._reduce_prompt_attention(layer, query, key, mask, first_query, scaling)
                self._prompt_keys[layer] = None
                del query, key, mask, pending
            self._finish_row(layer)
        self._finish_row(self.n_layers)
        self._prompt_targets = None
        self._scratch.clear()  # the attention blocks' buffers, before the vocabulary's are made
        self._score_prompt()
        self._scratch.clear()

    def _finish_row(self, row: int) -> None:
        h = self._prompt_rows[row]
        if h is None:
            return
        self._prompt_rows[row] = None
        if self.inspect.hidden_stats or self.inspect.keep_residuals:
            self._reduce_hidden(row, h[0], self._scratch)

    def _reduce_prompt_attention(self, layer: int, query, key, mask, first_query: int, scaling: float) -> None:
        keep_rows = self.inspect.keep_attention_rows
        # Kept rows have every key (one (H, q, k) array per layer); statistics need only the causal part.
        for weights, scores, q0 in weight_blocks(query, key, mask, first_query, scaling, self.job,
                                                 causal_keys=not keep_rows, scratch=self._scratch):
            if keep_rows:
                self._rows[layer].append(weights.to(torch.float16).cpu().numpy())
            if self.inspect.attention_stats:
                roles = role_stats(weights, q0, self._block_targets(q0, q0 + weights.shape[-2], weights.device))
                self._attn[layer].append(torch.cat([prompt_attention_stats(weights, scores, q0), roles]))

    def _block_targets(self, first: int, last: int, device):
        """The induction targets of the prompt's queries first..last-1 (None when its ids are unknown)."""
        if self._ids is None:
            return None
        if self._prompt_targets is None:
            self._prompt_targets = InductionTargets(self._ids)
        return self._prompt_targets.block(first, last, device)

    def _score_prompt(self) -> None:
        """Prompt surprisal: token t under the raw distribution at t-1, from the prefill's final states."""
        final_hidden, self._final_hidden = self._final_hidden, None
        P = 0 if final_hidden is None else final_hidden.shape[0]
        K = self.inspect.top_alternatives
        entropy = torch.full((P,), float("nan"))
        logprob = torch.full((P,), float("nan"))
        rank = torch.zeros(P, dtype=torch.long)
        top_ids = torch.zeros(P, K, dtype=torch.long)
        top_probs = torch.full((P, K), float("nan"))
        head = self.model.lm_head
        for i0 in range(0, P - 1, _PROMPT_CHUNK):
            self.job.check()
            i1 = min(P - 1, i0 + _PROMPT_CHUNK)
            logits = head_logits(head, final_hidden[i0:i1], self._scratch)
            targets = self.prompt_ids[i0 + 1:i1 + 1].to(logits.device)
            ent, tgt, rk, top_p, top_id = prompt_distribution_stats(logits, targets, K, self._scratch)
            del logits
            entropy[i0 + 1:i1 + 1] = ent.cpu()
            logprob[i0 + 1:i1 + 1] = tgt.cpu()
            rank[i0 + 1:i1 + 1] = rk.cpu()
            top_ids[i0 + 1:i1 + 1] = top_id.cpu()
            top_probs[i0 + 1:i1 + 1] = top_p.cpu()
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
                query = raw.shape[-1] - 1
                targets = None if self._ids is None else induction_pairs(self._ids.to(raw.device), query, query + 1)
                stats = torch.cat([attention_stats(raw, query), role_stats(raw, query, targets)])  # (5, L, H, 1)
            else:
                stats = torch.stack([torch.cat(parts, -1) for parts in self._attn], 1)  # (5, L, H, q)
            arr = stats.cpu().numpy()
            for j, name in enumerate(ATTENTION_STATS):
                attention[name] = arr[j]
        residual = None
        if self.inspect.keep_residuals and self._residual is not None:
            residual = self._residual.numpy()  # (L+1, q, D)
        rows = None
        if self.inspect.keep_attention_rows and self._rows[0]:
            rows = tuple(np.concatenate(parts, axis=1) for parts in self._rows)  # per layer (H, q, k)
        self._reset()
        return StepStats(start=start, hidden=hidden, attention=attention, residual=residual, attention_rows=rows)


class _AttentionSink:
    """What the engine's attention hands one layer's attention to (see attention.capture_attention)."""

    def __init__(self, capture: Capture, layer: int):
        self.capture = capture
        self.layer = layer

    def prompt(self, query, key, mask, first_query: int, scaling: float) -> None:
        """A prompt's queries and keys: kept for finish_prompt(), or reduced now when the queries
        cannot be recomputed later."""
        cap = self.capture
        if cap.defer_prompt:
            cap._prompt_keys[self.layer] = (key, mask, first_query, scaling)
        else:
            cap._reduce_prompt_attention(self.layer, query, key, mask, first_query, scaling)

    def step(self, weights: torch.Tensor) -> None:
        """A decode step's float32 weights (1, H, 1, k): stacked over layers and reduced in take_step."""
        cap = self.capture
        w = weights[0]
        if cap.inspect.keep_attention_rows:
            cap._rows[self.layer].append(w.to(torch.float16).cpu().numpy())
        if cap.inspect.attention_stats:
            cap._attn[self.layer].append(w)
