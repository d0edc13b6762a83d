"""Information-flow routes against a plain implementation of the definition, for both families.

The reference is a float64 copy of the model run by transformers with eager attention and forward
hooks on OPTForCausalLM's own modules: it builds every part as a full (T, T, H, D) tensor from the
attention weights, the value vectors and out_proj's weight, takes each sum from the model's own
activations (the layer's input plus self_attn's output; the MLP's residual plus fc2's output) and
applies the formula directly. Head masks are applied there by a pre-hook scaling out_proj's input,
as transformers' removed head_mask did, with no engine code.
"""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

from models import loaded_of, save_tiny_opt
from opt_desktop.engine import EngineService, HeadScale, LoadRequest
from opt_desktop.engine.analyses.routes import routes
from opt_desktop.engine.messages.errors import JobCancelled
from opt_desktop.engine.messages.requests import RoutesRequest
from opt_desktop.engine.messages.results import Routes

MASK = (HeadScale(layer=0, head=2, scale=0.0), HeadScale(layer=1, head=1, scale=0.5), HeadScale(layer=2, head=3, scale=0.0))


@pytest.fixture(scope="module")
def engine(tmp_path_factory, family, tokenizer):
    """A tiny OPT of each family whose biases and layer-norm weights are random too (they start at 0
    and 1), so a bias counted in the wrong place shows."""
    from transformers import OPTForCausalLM

    folder = save_tiny_opt(tmp_path_factory.mktemp(f"routes-{family}"), family, tokenizer)
    model = OPTForCausalLM.from_pretrained(folder)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(folder)
    svc = EngineService()
    svc.load(LoadRequest(source=str(folder), device="cpu")).result()
    yield svc
    svc.shutdown()
    assert svc.join(5.0)


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
    L, H, D = config.num_hidden_layers, config.num_attention_heads, config.hidden_size
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


def _compare(result: Routes, expected: dict) -> None:
    for name, want in expected.items():
        got = getattr(result, name)
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=2e-6, err_msg=name)


def _ids(tokenizer, text="The cat sat on the mat, and the cat sat on the hat."):
    return tokenizer(text)["input_ids"]


def test_routes_match_the_definition(engine, tokenizer, family):
    loaded = loaded_of(engine)
    ids = _ids(tokenizer)
    result = engine.call(lambda lm: routes(lm, ids)).result()
    _compare(result, reference_routes(loaded.model, ids))
    assert result.token_ids.tolist() == ids


def test_routes_of_a_head_masked_run_with_hidden_positions(engine, tokenizer, family):
    """The run's interventions are the routes' too; a mask changed part-way applies from its position;
    a head scaled to 0 and a hidden key are zero parts: the floor of 1e-5 over the sum's proximities."""
    loaded = loaded_of(engine)
    ids = _ids(tokenizer)
    T, cfg = len(ids), loaded.model.config
    hidden, change = (2, 5), 9
    schedule = ((0, MASK), (change, MASK[:1]))
    scales = np.ones((cfg.num_hidden_layers, T, cfg.num_attention_heads))
    for m in MASK:
        scales[m.layer, :change, m.head] = m.scale
    scales[MASK[0].layer, change:, MASK[0].head] = MASK[0].scale
    result = engine.call(lambda lm: routes(lm, ids, hidden_positions=hidden, mask_schedule=schedule)).result()
    expected = reference_routes(loaded.model, ids, scales, hidden)
    _compare(result, expected)
    plain = engine.call(lambda lm: routes(lm, ids)).result()
    assert not np.allclose(plain.attn, result.attn, atol=1e-3)  # the mask changed something
    # Every zero part of one sum has the same share, 1e-5 over the sum's proximities: the masked head
    # from every key, and every head from a hidden key.
    for t in range(T):
        zero = np.concatenate([result.attn[0, t, :t + 1, 2], result.attn[0, t, [p for p in hidden if p <= t], :].ravel()])
        assert np.all(zero > 0) and np.ptp(zero) <= 1e-6 * zero[0]
        assert zero[0] < result.attn[0, t].max()


def test_contributions_are_non_negative_and_each_sum_adds_up_to_one(engine, tokenizer):
    result = engine.call(lambda lm: routes(lm, _ids(tokenizer))).result()
    for name in ("attn", "attn_residual", "mlp", "mlp_residual"):
        assert np.all(getattr(result, name) >= 0), name
    T = result.n_positions
    np.testing.assert_allclose(result.attn.sum(axis=(2, 3)) + result.attn_residual, 1.0, atol=1e-5)
    np.testing.assert_allclose(result.mlp + result.mlp_residual, 1.0, atol=1e-6)
    assert not np.triu(result.attn.sum(-1), 1).any()  # no part from a later key
    assert result.attn.shape == (3, T, T, 4)


def test_routes_job_reports_progress_and_stops_within_a_layer(engine, tokenizer):
    ids = _ids(tokenizer) * 3
    seen = []
    job = engine.submit(RoutesRequest(tuple(ids)), on_event=seen.append)
    end = job.wait(60)
    assert end.reason == "done" and isinstance(end.result, Routes)
    L, H = end.result.n_layers, end.result.n_heads
    assert [(p.done, p.total) for p in seen] == [(i, L * H) for i in range(1, L * H + 1)]

    stop = threading.Event()
    calls = []

    def progress(done, total):
        calls.append(done)
        if done == 1:  # the first head of the first layer is done: stop before the layer ends
            stop.set()

    with pytest.raises(JobCancelled):
        engine.call(lambda lm: routes(lm, ids, progress=progress, stop=stop)).result()
    assert calls == [1]
