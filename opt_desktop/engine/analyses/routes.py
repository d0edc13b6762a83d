"""Information-flow routes (Ferrando & Voita 2024): what each position's representation was built
from, layer by layer, for every position of a run (prompt and generated tokens, teacher-forced).

For a sum y = Σ_i x_i of parts, part i's contribution is

    proximity_i = max(‖y‖₁ − ‖y − x_i‖₁, 1e-5),   c_i = proximity_i / Σ_j proximity_j

with L1 norms over the hidden dimension. In every decoder layer and position t:

- attention block: the parts are, for every head h and key s ≤ t, what h writes into t from s
  (A_h[t, s] · v_h[s] through h's columns of out_proj, no bias, times the head's scale when the run
  masked it), and the residual entering the block; y is that residual plus the block's output (the
  out_proj bias is in y and in no part), before any layer norm after it;
- MLP block: the parts are the MLP's output and the residual entering the MLP; y is their sum.

Pre-LayerNorm OPT (125m and larger) reads the residual stream through self_attn_layer_norm and
final_layer_norm; post-LayerNorm opt-350m adds the attention output to the layer's input and the
MLP's output to self_attn_layer_norm's output, each sum taken before its layer norm.
project_in/project_out lie outside the layers.

The residual stream is carried in float32 from the input of layer 0 on: layer norms, attention
weights, the per-head parts, the sums and the norms are float32 arithmetic; q/k/v and the MLP run
through the model's own modules (for a float32 model, float32 too) and out_proj's weights are read
in float32 in every precision mode. The L1 norms ‖y_t − part‖ are T²·H·d work per layer: they are
taken a block of queries of one head at a time, in a buffer of at most BLOCK_ELEMENTS floats.

Memory stays within MEMORY_BOUND above the model, the result included, up to OPT's 2,048 positions:
a layer's working arrays are a few (T, T) and (T, D) ones, and the result is the bounded form of
routes_result.py (opt-350m at 2,048 tokens: 192 MiB of edge sums and, at most, 96 MiB of head parts),
not the L·T²·H array of every part (6 GiB there), which is built only when asked for (`dense`, the CLI's
JSON) and only up to DENSE_BYTES. benchmarks/routes_speed.py measures the peak.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from typing import Sequence

import numpy as np
import torch

from ...formatting import format_bytes
from ..messages.errors import SettingsError
from ..messages.interventions_spec import check_hidden_positions
from ..messages.job_context import JobContext
from ..messages.routes_result import EPSILON, MAX_HEAD_PARTS, Routes, pack_rows, packed_size, select_heads
from ..running.interventions import attention_inputs
from ..running.loaded import LoadedModel
from ..running.scoring import _token_tensor
from .grad_model import _dense
from .lens_table import MaskSchedule, _schedule

FLOOR = 1e-5  # the least proximity a part can have (a zero part, a masked head)
BLOCK_ELEMENTS = 1 << 20  # floats in one block of differences y_t − part (4 MiB: it stays in the cache)
MEMORY_BOUND = 512 << 20  # bytes the routes may take above the model, their result included (issue 26)
DENSE_BYTES = 256 << 20  # the full per-head array's part of it, when asked for (the rest: working memory)


class _Grabbed(Exception):
    """Raised by a hook to end a forward pass once it has what it came for."""


def _first_layer_input(model, ids: torch.Tensor, hidden: Sequence[int]) -> torch.Tensor:
    """(T, D) input of decoder layer 0, as the model's own embedding code makes it (tokens, project_in,
    learned positions)."""
    decoder = model.model.decoder
    attention_mask, position_ids = attention_inputs(ids.shape[1], hidden, ids.device)
    box: list[torch.Tensor] = []

    def grab(module, args, kwargs):
        box.append(args[0] if args else kwargs["hidden_states"])
        raise _Grabbed

    handle = decoder.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        decoder(input_ids=ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    except _Grabbed:
        pass
    finally:
        handle.remove()
    return box[0][0]


def head_scales(schedule: list[tuple[int, tuple]], T: int, n_layers: int, n_heads: int) -> np.ndarray:
    """(L, T, H) float32: the scale of each head at each position, from a head-mask schedule."""
    scales = np.ones((n_layers, T, n_heads), np.float32)
    for j, (start, mask) in enumerate(schedule):
        end = schedule[j + 1][0] if j + 1 < len(schedule) else T
        for item in mask:
            scales[item.layer, start:end, item.head] = item.scale
    return scales


def _layer_norm(module, x: torch.Tensor) -> torch.Tensor:
    weight = None if module.weight is None else module.weight.float()
    bias = None if module.bias is None else module.bias.float()
    return torch.nn.functional.layer_norm(x, module.normalized_shape, weight, bias, module.eps)


def _onloaded(layer) -> ExitStack:
    """A layer whose weights accelerate offloaded (to the CPU or disk) brought to its execution device."""
    stack = ExitStack()
    try:
        from accelerate.utils import align_module_device, has_offloaded_params
    except ImportError:  # pragma: no cover - accelerate is a dependency
        return stack
    for module in layer.modules():
        if has_offloaded_params(module):
            stack.enter_context(align_module_device(module))
    return stack


def _device_of(layer, fallback: torch.device) -> torch.device:
    for tensor in list(layer.parameters()) + list(layer.buffers()):
        if not tensor.is_meta:
            return tensor.device
    return fallback


class _Layer:
    """One decoder layer's attention, taken apart in float32 (see the module's docstring)."""

    def __init__(self, layer, x: torch.Tensor, compute_dtype: torch.dtype, visible: torch.Tensor,
                 scales: torch.Tensor):
        attn = layer.self_attn
        self.layer, self.x = layer, x
        self.H, self.d = attn.num_heads, attn.head_dim
        self.visible = visible  # (T, T) bool: key s is seen by query t
        self.scales = scales  # (T, H) float32
        a_in = _layer_norm(layer.self_attn_layer_norm, x) if layer.do_layer_norm_before else x
        a_in = a_in.to(compute_dtype)
        T = x.shape[0]
        self.q = (attn.q_proj(a_in).float() * attn.scaling).view(T, self.H, self.d).transpose(0, 1)  # (H, T, d)
        self.k = attn.k_proj(a_in).float().view(T, self.H, self.d).transpose(0, 1)
        self.v = attn.v_proj(a_in).float().view(T, self.H, self.d).transpose(0, 1)
        weight, bias = _dense(attn.out_proj)
        self.w = weight.to(x.device).view(-1, self.H, self.d)  # (D, H, d): head h's columns at [:, h]
        self.bias = None if bias is None else bias.to(x.device)

    def weights(self, h: int) -> torch.Tensor:
        """(T, T) float32 attention weights of head h, [query][key], each row times the head's scale at
        that query (0 for a key the query does not see)."""
        scores = torch.matmul(self.q[h], self.k[h].t())
        scores.masked_fill_(~self.visible, torch.finfo(torch.float32).min)
        return torch.softmax(scores, dim=-1).mul_(self.scales[:, h, None])

    def projected(self, h: int) -> torch.Tensor:
        """(T, D): each key's value vector through head h's columns of out_proj."""
        return torch.matmul(self.v[h], self.w[:, h].t())

    def output(self) -> torch.Tensor:
        """(T, D) the residual after the block adds its output: y = x + Σ parts + bias."""
        y = self.x.clone()
        for h in range(self.H):
            y += torch.matmul(torch.matmul(self.weights(h), self.v[h]), self.w[:, h].t())
        if self.bias is not None:
            y += self.bias
        return y


def dense_bytes(n_layers: int, n_positions: int, n_heads: int) -> int:
    """Bytes of the full (L, T, T, H) float32 array of every part."""
    return 4 * n_layers * n_positions * n_positions * n_heads


def longest_dense(n_layers: int, n_heads: int) -> int:
    """The most positions whose full array fits in DENSE_BYTES."""
    return math.isqrt(DENSE_BYTES // (4 * n_layers * n_heads))


def check_dense(n_layers: int, n_positions: int, n_heads: int) -> None:
    """SettingsError when the full array of `n_positions` would not fit in the memory bound."""
    size = dense_bytes(n_layers, n_positions, n_heads)
    if size > DENSE_BYTES:
        raise SettingsError(
            f"Every part of the routes of {n_positions} positions would take {format_bytes(size)} "
            f"({n_layers} layers × {n_positions}² × {n_heads} heads in float32), more than the "
            f"{format_bytes(DENSE_BYTES)} they may; the longest sequence that fits is "
            f"{longest_dense(n_layers, n_heads)} tokens, the leading </s> included (the table of the "
            f"strongest routes has no such limit).")


def routes(loaded: LoadedModel, token_ids: Sequence[int], *, hidden_positions: Sequence[int] = (),
           mask_schedule: MaskSchedule = ((0, ()),), dense: bool = False, job: JobContext | None = None) -> Routes:
    """The contributions of every part to every sum of every layer, for every position of `token_ids`,
    in the bounded form (routes_result.py); with `dense`, the full (L, T, T, H) array too, refused
    (SettingsError) when it would not fit in DENSE_BYTES.

    `hidden_positions` and `mask_schedule` ((first position, head mask) pairs) are the run's
    interventions. The job's progress counts heads (L·H in all); the job is checked between blocks
    of queries, so a stop lands within a layer, and raises JobCancelled (nothing partial is returned).
    """
    job = job if job is not None else JobContext()
    model, info = loaded.model, loaded.info
    ids = _token_tensor(loaded, token_ids)
    T, L, H = ids.shape[1], info.n_layers, info.n_heads
    hidden = check_hidden_positions(hidden_positions, T, "sequence")
    scales_all = head_scales(_schedule(mask_schedule, L, H, info.label), T, L, H)
    if dense:
        check_dense(L, T, H)

    attn = np.zeros((L, T, T, H), np.float32) if dense else None
    edges = np.zeros((L, packed_size(T)), np.float32)  # pages are taken as layers fill them
    attn_residual = np.zeros((L, T), np.float32)
    mlp = np.zeros((L, T), np.float32)
    mlp_residual = np.zeros((L, T), np.float32)
    heads = []  # each layer's kept head parts
    compute_dtype = model.model.decoder.embed_tokens.weight.dtype
    job.check()
    with torch.inference_mode():
        x = _first_layer_input(model, ids, hidden).float()
        for l, layer in enumerate(model.model.decoder.layers):
            with _onloaded(layer):
                device = _device_of(layer, x.device)
                x = x.to(device)
                visible = torch.ones(T, T, dtype=torch.bool, device=device).tril_()
                if hidden:
                    visible[:, list(hidden)] = False
                parts = _Layer(layer, x, compute_dtype, visible, torch.from_numpy(scales_all[l]).to(device))
                y = parts.output()
                y_norm = torch.linalg.vector_norm(y, 1, dim=-1)  # (T,)
                res = (y_norm - torch.linalg.vector_norm(y - x, 1, dim=-1)).clamp_(min=FLOOR)
                layer_parts = _LayerParts(T, H, res, None if attn is None else torch.from_numpy(attn[l]))
                _head_proximities(parts, y, y_norm, layer_parts, job, lambda h: job.progress(l * H + h, L * H))
                total = layer_parts.edges.sum(dim=1, dtype=torch.float64) + res  # (T,): Σ of every part
                if attn is not None:
                    attn[l] /= total.cpu().numpy()[:, None, None].astype(np.float32)
                pack_rows(layer_parts.edges.div_(total[:, None].float()).cpu().numpy(), edges[l])
                attn_residual[l] = (res / total).float().cpu().numpy()
                heads.append(layer_parts.kept(total))
                del parts, layer_parts
                x, mlp[l], mlp_residual[l] = _mlp_block(layer, y, compute_dtype)
    return Routes.assemble(ids[0].cpu().numpy(), H, edges, attn_residual, mlp, mlp_residual, heads, attn=attn)


class _LayerParts:
    """What one layer's head proximities leave behind, head by head, without an (T, T, H) array: their
    sum over heads per (query, key), and the candidates for the parts kept one by one.

    A part is kept when its share of the node's sum is at least EPSILON, the largest MAX_HEAD_PARTS of
    the node. That sum is known only once every head is done, but it is at least the residual's
    proximity plus the heads' so far, so a part under EPSILON times that lower bound can be dropped at
    once; and a part that is not among its node's MAX_HEAD_PARTS largest now never will be (the node's
    parts share one sum). What is left after each head is at most MAX_HEAD_PARTS per node."""

    def __init__(self, T: int, H: int, res: torch.Tensor, dense: torch.Tensor | None):
        self.T, self.H, self.dense = T, H, dense
        self.edges = torch.zeros(T, T, device=res.device)  # Σ_h proximity, [query][key]
        self.running = res.clone()  # the lower bound of each node's sum
        self.node = torch.zeros(0, dtype=torch.int32, device=res.device)
        self.key = torch.zeros(0, dtype=torch.int32, device=res.device)
        self.prox = torch.zeros(0, device=res.device)

    def add(self, h: int, p: torch.Tensor) -> None:
        """Head h's proximities (T, T) [query][key] (0 after the query)."""
        self.edges += p
        if self.dense is not None:
            self.dense[:, :, h] = p.cpu()
        self.running += p.sum(dim=1)
        floor = self.running * EPSILON
        if self.T > MAX_HEAD_PARTS:  # of this head's parts, only a node's largest MAX_HEAD_PARTS can be kept
            values, s = torch.topk(p, MAX_HEAD_PARTS, dim=1)
            t = torch.arange(self.T, device=p.device)[:, None].expand_as(s)
            on = values >= floor[:, None]
            t, s, values = t[on], s[on], values[on]
        else:
            t, s = torch.nonzero(p >= floor[:, None], as_tuple=True)
            values = p[t, s]
        keep = self.prox >= floor[self.node]
        self.node = torch.cat([self.node[keep], t.int()])
        self.key = torch.cat([self.key[keep], (s * self.H + h).int()])
        self.prox = torch.cat([self.prox[keep], values])
        if len(self.node) and int(torch.bincount(self.node, minlength=self.T).max()) > MAX_HEAD_PARTS:
            by_size = torch.argsort(self.prox, descending=True, stable=True)
            by_size = by_size[torch.argsort(self.node[by_size], stable=True)]  # node by node, the largest first
            grouped = self.node[by_size].contiguous()
            rank = torch.arange(len(grouped), device=grouped.device) - torch.searchsorted(grouped, grouped)
            chosen = by_size[rank < MAX_HEAD_PARTS]
            self.node, self.key, self.prox = self.node[chosen], self.key[chosen], self.prox[chosen]

    def kept(self, total: torch.Tensor):
        """(counts (T,), keys, shares) of the parts of at least EPSILON of their node's `total`."""
        shares = (self.prox / total[self.node]).float()
        return select_heads(self.node.cpu().numpy(), self.key.cpu().numpy(), shares.cpu().numpy(),
                            len(total), EPSILON, MAX_HEAD_PARTS)


def _head_proximities(parts: _Layer, y: torch.Tensor, y_norm: torch.Tensor, out: _LayerParts, job: JobContext,
                      head_done) -> None:
    """Hand `out` each head's (T, T) proximities of the attention parts, [query][key]; 0 where the key is
    after the query (no part)."""
    T, D = y.shape
    block = max(1, min(T, BLOCK_ELEMENTS // (T * D)))
    diff = torch.empty(block * T * D, device=y.device)
    norms = torch.empty(T, T, device=y.device)
    row = torch.empty(block * T, device=y.device)
    for h in range(parts.H):
        a, projected = parts.weights(h), parts.projected(h)
        for q0 in range(0, T, block):
            job.check()
            q1 = min(T, q0 + block)
            d = diff[:(q1 - q0) * q1 * D].view(q1 - q0, q1, D)
            # ‖y_t − A[t, s] · projected[s]‖₁ for the block's queries t and every key s < q1
            torch.addcmul(y[q0:q1, None, :], a[q0:q1, :q1, None], projected[None, :q1, :], value=-1.0, out=d)
            n = row[:(q1 - q0) * q1].view(q1 - q0, q1)
            torch.sum(d.abs_(), dim=-1, out=n)  # (abs and sum beat linalg.vector_norm's ord=1 threefold)
            norms[q0:q1, :q1] = n
        del a, projected
        out.add(h, torch.sub(y_norm[:, None], norms).clamp_(min=FLOOR).tril_())  # keys after the query are no parts
        head_done(h + 1)


def _mlp_block(layer, y: torch.Tensor, compute_dtype: torch.dtype):
    """(the layer's output, the MLP's contributions (T,), the residual's (T,)) as numpy."""
    pre = layer.do_layer_norm_before
    residual = y if pre else _layer_norm(layer.self_attn_layer_norm, y)
    h = _layer_norm(layer.final_layer_norm, residual) if pre else residual
    out = layer.fc2(layer.activation_fn(layer.fc1(h.to(compute_dtype)))).float()
    z = residual + out
    z_norm = torch.linalg.vector_norm(z, 1, dim=-1)
    # ‖z − residual‖ is ‖out‖ and ‖z − out‖ is ‖residual‖: the two parts' proximities
    p_out = (z_norm - torch.linalg.vector_norm(residual, 1, dim=-1)).clamp_(min=FLOOR)
    p_res = (z_norm - torch.linalg.vector_norm(out, 1, dim=-1)).clamp_(min=FLOOR)
    total = p_out + p_res
    nxt = z if pre else _layer_norm(layer.final_layer_norm, z)
    return nxt, (p_out / total).cpu().numpy(), (p_res / total).cpu().numpy()
