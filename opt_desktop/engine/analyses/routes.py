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
taken a block of queries of one head at a time, in a buffer of at most BLOCK_ELEMENTS floats, so the
working memory stays far below 512 MiB whatever the length; the arrays kept are the result.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Sequence

import numpy as np
import torch

from ..messages.interventions_spec import check_hidden_positions
from ..messages.job_context import JobContext
from ..messages.results import Routes
from ..running.interventions import attention_inputs
from ..running.loaded import LoadedModel
from ..running.scoring import _token_tensor
from .grad_model import _dense
from .lens_table import MaskSchedule, _schedule

FLOOR = 1e-5  # the least proximity a part can have (a zero part, a masked head)
BLOCK_ELEMENTS = 1 << 20  # floats in one block of differences y_t − part (4 MiB: it stays in the cache)


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


def routes(loaded: LoadedModel, token_ids: Sequence[int], *, hidden_positions: Sequence[int] = (),
           mask_schedule: MaskSchedule = ((0, ()),), job: JobContext | None = None) -> Routes:
    """The contributions of every part to every sum of every layer, for every position of `token_ids`.

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

    attn = np.zeros((L, T, T, H), np.float32)
    attn_residual = np.zeros((L, T), np.float32)
    mlp = np.zeros((L, T), np.float32)
    mlp_residual = np.zeros((L, T), np.float32)
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
                prox = torch.from_numpy(attn[l])  # filled in place: no second (T, T, H) array
                _head_proximities(parts, y, y_norm, prox, job, lambda h: job.progress(l * H + h, L * H))
                res = (y_norm - torch.linalg.vector_norm(y - x, 1, dim=-1)).clamp_(min=FLOOR).cpu()
                total = prox.sum(dim=(1, 2), dtype=torch.float64) + res  # (T,)
                prox.div_(total[:, None, None].float())
                attn_residual[l] = (res / total).numpy()
                del parts
                x, mlp[l], mlp_residual[l] = _mlp_block(layer, y, compute_dtype)
    return Routes(token_ids=np.asarray(ids[0].cpu().numpy(), np.int64), attn=attn, attn_residual=attn_residual,
                  mlp=mlp, mlp_residual=mlp_residual)


def _head_proximities(parts: _Layer, y: torch.Tensor, y_norm: torch.Tensor, prox: torch.Tensor, job: JobContext,
                      head_done) -> None:
    """Fill `prox` (T, T, H) on the CPU with the proximities of the attention parts, [query][key][head];
    0 where the key is after the query (no part)."""
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
        p = torch.sub(y_norm[:, None], norms).clamp_(min=FLOOR).tril_()  # keys after the query are no parts
        prox[:, :, h] = p.cpu()
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
