"""A plain implementation of the definition of information-flow routes, for the tests to check the
engine's against (tests/engine/test_routes.py, tests/test_cli_routes.py, tests/gui/test_routes_gui.py).

A float64 copy of the model runs through transformers with eager attention and forward hooks on
OPTForCausalLM's own modules; every part is built as a full (T, T, H, D) tensor from the attention
weights, the value vectors and out_proj's weight; each sum is taken from the model's own activations
(the layer's input plus self_attn's output; the MLP's residual plus fc2's output) and the formula is
applied directly. Head masks are applied by a pre-hook scaling out_proj's input, as transformers'
removed head_mask did, with no engine code.
"""

from __future__ import annotations

import copy

import numpy as np
import torch


def save_biased_opt(folder, family: str, tokenizer):
    """A tiny OPT of `family` whose biases and layer-norm weights are random too (they start at 0 and
    1), so a bias counted in the wrong place shows."""
    from transformers import OPTForCausalLM

    from models import save_tiny_opt

    folder = save_tiny_opt(folder, family, tokenizer)
    model = OPTForCausalLM.from_pretrained(folder)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(folder)
    return folder


def _contributions(y: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """The definition, literally: y (..., D), parts (..., P, D) -> (..., P)."""
    prox = (y.abs().sum(-1)[..., None] - (y[..., None, :] - parts).abs().sum(-1)).clamp(min=1e-5)
    return prox / prox.sum(-1, keepdim=True)


def reference_routes(model, ids, scales=None, hidden=()) -> dict[str, np.ndarray]:
    """The routes of `ids` (a list of ints) in float64; `scales` (L, T, H) scales head h's output at
    position t of layer l; `hidden` positions are hidden from attention as keys."""
    ref = copy.deepcopy(model).double()
    ref.set_attn_implementation("eager")
    config = ref.config
    H, D = config.num_attention_heads, config.hidden_size
    d, T = D // H, len(ids)
    seen: dict[tuple[str, int], torch.Tensor] = {}
    handles = []

    def keep(name, l, pre=False):
        def hook(module, args, out=None):
            value = args[0] if pre else (out[0] if isinstance(out, tuple) else out)
            seen[name, l] = value.detach()[0] if value.dim() == 3 else value.detach()
        return hook

    for l, layer in enumerate(ref.model.decoder.layers):
        attn = layer.self_attn
        handles += [layer.register_forward_pre_hook(keep("x", l, pre=True)),
                    attn.register_forward_hook(lambda m, a, out, l=l: seen.__setitem__(("attn", l), out)),
                    attn.v_proj.register_forward_hook(keep("v", l)),
                    layer.fc2.register_forward_hook(keep("mlp", l)),
                    layer.self_attn_layer_norm.register_forward_hook(keep("ln1", l))]
        if scales is not None:
            s = torch.as_tensor(scales[l], dtype=torch.float64).repeat_interleave(d, dim=-1)  # (T, D)
            handles.append(attn.out_proj.register_forward_pre_hook(lambda m, args, s=s: (args[0] * s,)))
    mask = torch.ones(1, T, dtype=torch.long)
    mask[0, list(hidden)] = 0
    try:
        with torch.no_grad():
            ref(input_ids=torch.tensor([ids]), attention_mask=mask, position_ids=torch.arange(T)[None],
                output_attentions=True)
    finally:
        for h in handles:
            h.remove()

    return _apply_definition(ref, seen, scales, T)


@torch.no_grad()
def _apply_definition(ref, seen, scales, T) -> dict[str, np.ndarray]:
    config = ref.config
    L, H, D = config.num_hidden_layers, config.num_attention_heads, config.hidden_size
    d = D // H
    out = {k: np.zeros(shape) for k, shape in (("attn", (L, T, T, H)), ("attn_residual", (L, T)),
                                               ("mlp", (L, T)), ("mlp_residual", (L, T)))}
    for l, layer in enumerate(ref.model.decoder.layers):
        x = seen["x", l]
        attn_out, weights = seen["attn", l]
        A = weights[0]  # (H, T, T)
        v = seen["v", l].view(T, H, d)
        W = layer.self_attn.out_proj.weight.view(D, H, d)
        scale = torch.ones(T, H, dtype=torch.float64) if scales is None else torch.as_tensor(scales[l], dtype=torch.float64)
        # parts[t, s, h] = scale[t, h] A_h[t, s] v_h[s] W_h^T, for every t, s
        parts = torch.einsum("th,hts,she,dhe->tshd", scale, A, v, W)
        y = x + attn_out[0]
        bias = layer.self_attn.out_proj.bias
        assert torch.allclose(y, x + parts.sum((1, 2)) + bias, atol=1e-9), "the parts do not add up to the block"
        for t in range(T):
            c = _contributions(y[t], torch.cat([parts[t, :t + 1].reshape(-1, D), x[t][None]]))
            out["attn"][l, t, :t + 1] = c[:-1].view(t + 1, H).numpy()
            out["attn_residual"][l, t] = float(c[-1])
        residual = y if layer.do_layer_norm_before else seen["ln1", l]
        mlp = seen["mlp", l]
        c = _contributions(residual + mlp, torch.stack([mlp, residual], dim=1))
        out["mlp"][l], out["mlp_residual"][l] = c[:, 0].numpy(), c[:, 1].numpy()
    return out


def assert_bounded_form(result, expected: dict, rtol: float = 1e-3, atol: float = 2e-6) -> None:
    """`result` (engine Routes in the bounded form) against the reference's every part: the edge sums are
    the reference's sums over heads; the head parts kept are the reference's parts of at least epsilon
    (all of them: these runs have fewer than MAX_HEAD_PARTS per node), with the same values; the residual
    and MLP shares are the reference's."""
    from opt_desktop.engine.messages.routes_result import EPSILON, unpack_rows

    ref = expected["attn"]
    L, T, _, H = ref.shape
    assert result.n_heads == H and result.edges.shape == (L, T * (T + 1) // 2)
    for l in range(L):
        # an edge sums H parts, each within atol of the reference's: so is it within H·atol
        np.testing.assert_allclose(unpack_rows(result.edges[l], T), ref[l].sum(-1), rtol=rtol, atol=H * atol)
        for t in range(T):
            s, h, share = result.node_heads(l, t)
            np.testing.assert_allclose(share, ref[l, t, s, h], rtol=rtol, atol=atol)
            assert np.all(share >= EPSILON)
            clear = ref[l, t] >= EPSILON * (1 + rtol)  # not a rounding away from the cut
            assert {(a, b) for a, b in zip(*np.nonzero(clear))} <= set(zip(s.tolist(), h.tolist()))
    assert result.head_counts.sum() == len(result.head_keys) > 0
    for name in ("attn_residual", "mlp", "mlp_residual"):
        np.testing.assert_allclose(getattr(result, name), expected[name], rtol=rtol, atol=atol, err_msg=name)
