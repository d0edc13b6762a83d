"""Head masking and attention masking, against references computed here without the engine's hooks."""

import copy

import numpy as np
import pytest
import torch

from models import run
from opt_desktop.engine import (
    GenerationRequest,
    GenerationSettings,
    HeadMaskChanged,
    HeadScale,
    InspectSettings,
    PromptScored,
    SettingsError,
    Started,
    TokenGenerated,
)
from opt_desktop.engine.running.attention import ATTN_IMPLEMENTATION
from opt_desktop.engine.running.capture import distribution_stats
from opt_desktop.engine.running.interventions import HeadMask

PROMPT = "Hello, my dog is cute and"
# Heads of the tiny models (3 layers x 4 heads): an ablation, a damping and an amplification.
MASK = (HeadScale(layer=0, head=1, scale=0.0), HeadScale(layer=1, head=2, scale=0.5),
        HeadScale(layer=2, head=0, scale=1.7))


def _loaded(engine):
    return engine.call(lambda loaded: loaded).result()


def _tokens(events):
    return [e.token_id for e in events if isinstance(e, TokenGenerated)]


def _edited_copy(model, mask=(), implementation="eager"):
    """The independent reference: a copy whose out_proj weight columns of each head are scaled.

    out_proj(x) = x W^T + b, so scaling input slice h*d:(h+1)*d by s equals scaling those columns of W.
    """
    ref = copy.deepcopy(model)
    ref.set_attn_implementation(implementation)
    d = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        for m in mask:
            ref.model.decoder.layers[m.layer].self_attn.out_proj.weight[:, m.head * d:(m.head + 1) * d] *= m.scale
    return ref


def _logits(model, ids, **kwargs):
    with torch.no_grad():
        return model(torch.tensor([ids]), use_cache=False, **kwargs).logits[0].double()


@pytest.fixture(scope="module")
def sequence(engine, tokenizer):
    ids = tokenizer(PROMPT)["input_ids"]
    return ids + list(range(300, 308))


@pytest.mark.parametrize("implementation", ["eager", "sdpa", ATTN_IMPLEMENTATION])
def test_hook_equals_scaled_out_proj_columns(engine, sequence, implementation):
    model = _loaded(engine).model
    ours = copy.deepcopy(model)
    ours.set_attn_implementation(implementation)
    with HeadMask(ours, MASK):
        masked = _logits(ours, sequence)
    reference = _logits(_edited_copy(model, MASK), sequence)
    torch.testing.assert_close(masked, reference, atol=1e-5, rtol=1e-5)
    assert (masked - _logits(model, sequence)).abs().max() > 1e-2  # the mask really changes the output
    assert not any(layer.self_attn.out_proj._forward_pre_hooks for layer in ours.model.decoder.layers)


def test_hook_equals_scaled_attention_probabilities(engine, sequence):
    """Under eager attention, scaling a head's output is scaling its attention probabilities (the old head_mask)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    scale_of = {(m.layer, m.head): m.scale for m in MASK}

    def scaled_probabilities(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        """transformers' eager_attention_forward, with each head's probabilities multiplied by its scale."""
        scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask[:, :, :, :key.shape[-2]]
        weights = torch.softmax(scores, dim=-1)
        factors = torch.tensor([scale_of.get((module.layer_idx, h), 1.0) for h in range(query.shape[1])])
        weights = weights * factors.view(1, -1, 1, 1)
        return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights

    AttentionInterface.register("test_scaled_probabilities", scaled_probabilities)
    AttentionMaskInterface.register("test_scaled_probabilities", eager_mask)
    model = _loaded(engine).model
    by_probabilities = copy.deepcopy(model)
    by_probabilities.set_attn_implementation("test_scaled_probabilities")
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with HeadMask(eager, MASK):
        torch.testing.assert_close(_logits(eager, sequence), _logits(by_probabilities, sequence),
                                   atol=1e-5, rtol=1e-5)


def test_mask_of_ones_installs_nothing(engine):
    model = _loaded(engine).model
    with HeadMask(model, (HeadScale(layer=0, head=0, scale=1.0),)) as mask:
        assert not any(layer.self_attn.out_proj._forward_pre_hooks for layer in model.model.decoder.layers)
        mask.set(MASK)
        assert [bool(layer.self_attn.out_proj._forward_pre_hooks) for layer in model.model.decoder.layers] == [
            True, True, True]
        mask.set(())
        assert not any(layer.self_attn.out_proj._forward_pre_hooks for layer in model.model.decoder.layers)


@pytest.mark.parametrize("mask", [(), (HeadScale(layer=1, head=1, scale=1.0),)], ids=["empty", "ones"])
def test_no_mask_changes_nothing_bit_for_bit(engine, tokenizer, mask):
    """Tokens and logits are those of transformers' own generate, with no hooks of ours at all."""
    events, finished = run(engine, GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=6),
                                                     head_mask=mask))
    model = _loaded(engine).model
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=1, output_logits=True,
                             return_dict_in_generate=True)
    assert list(finished.token_ids) == out.sequences[0, ids.shape[1]:].tolist()
    tokens = [e for e in events if isinstance(e, TokenGenerated)]
    for ev, logits in zip(tokens, out.logits, strict=True):
        _, lp, _, top_lp, _ = distribution_stats(logits[0], torch.tensor(ev.token_id), 10)
        assert ev.logprob == lp.item()  # identical, not merely close
        assert ev.top_probs == tuple(top_lp.exp().tolist())


def test_masked_generation_with_the_kv_cache_equals_a_full_forward(engine):
    events, finished = run(engine, GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=8),
                                                     head_mask=MASK))
    started = events[0]
    assert started.head_mask == ((0, 1, 0.0), (1, 2, 0.5), (2, 0, 1.7))
    ids = list(started.prompt_ids) + list(finished.token_ids)
    P = len(started.prompt_ids)
    logp = torch.log_softmax(_logits(_edited_copy(_loaded(engine).model, MASK), ids), -1)
    tokens = [e for e in events if isinstance(e, TokenGenerated)]
    assert [e.token_id for e in tokens] == logp[P - 1:-1].argmax(-1).tolist()
    expected = logp[torch.arange(P - 1, len(ids) - 1), torch.tensor(ids[P:])]
    np.testing.assert_allclose([e.logprob for e in tokens], expected.numpy(), atol=1e-4)
    scored = next(e for e in events if isinstance(e, PromptScored))
    np.testing.assert_allclose(scored.logprob[1:], logp[torch.arange(P - 1), torch.tensor(ids[1:P])].numpy(),
                               atol=1e-4)


@pytest.mark.parametrize("mask, words", [
    ((HeadScale(layer=3, head=0),), "Layer 3 does not exist"),
    ((HeadScale(layer=1, head=4),), "Head 1:4 does not exist"),
])
def test_heads_the_model_lacks_are_refused(engine, mask, words):
    events = []
    with pytest.raises(SettingsError, match=words) as err:
        engine.generate(GenerationRequest(prompt=PROMPT, head_mask=mask), events.append).result()
    assert "\n" not in str(err.value) and events == []
    with pytest.raises(SettingsError, match=words):
        engine.set_head_mask(mask)


def test_mask_changed_mid_run_applies_from_the_next_token(engine):
    """Tokens before k are the unmasked run's; from k on, the model ran with the new mask over the
    cache the old mask had built (reference: an unmasked forward, then the edited copy continuing it)."""
    k, n = 3, 9
    new_mask = tuple(HeadScale(layer=l, head=h, scale=0.0) for l in range(3) for h in range(3))
    settings = GenerationSettings(max_new_tokens=n)
    events = []

    def emit(ev):
        events.append(ev)
        if isinstance(ev, TokenGenerated) and ev.index == k - 1:
            engine.set_head_mask(new_mask)  # from the worker thread, as a GUI thread could at any time

    finished = engine.generate(GenerationRequest(prompt=PROMPT, settings=settings), emit).result()
    plain, _ = run(engine, GenerationRequest(prompt=PROMPT, settings=settings))
    changes = [i for i, e in enumerate(events) if isinstance(e, HeadMaskChanged)]
    assert len(changes) == 1
    change = events[changes[0]]
    assert change.index == k and change.head_mask == tuple((m.layer, m.head, 0.0) for m in new_mask)
    assert isinstance(events[changes[0] - 1], TokenGenerated) and events[changes[0] - 1].index == k - 1
    assert _tokens(events)[:k] == _tokens(plain)[:k]

    model = _loaded(engine).model
    P = len(events[0].prompt_ids)
    ids = torch.tensor([list(events[0].prompt_ids) + list(finished.token_ids)])
    cut = P + k - 1  # positions fed before token k was produced; the step feeding `cut` makes token k
    with torch.no_grad():
        before = model(ids[:, :cut], use_cache=True)
        after = _edited_copy(model, new_mask)(ids[:, cut:], cache=before.cache, use_cache=True)
    logp = torch.log_softmax(after.logits[0].double(), -1)[:-1]
    assert list(finished.token_ids[k:]) == logp.argmax(-1).tolist()
    mine = [e.logprob for e in events if isinstance(e, TokenGenerated)][k:]
    np.testing.assert_allclose(mine, logp[torch.arange(n - k), ids[0, cut + 1:]].numpy(), atol=1e-4)
    plain_lp = [e.logprob for e in plain if isinstance(e, TokenGenerated)][k:]
    assert not np.allclose(mine, plain_lp, atol=1e-3)  # the new mask really changed the continuation


def test_set_head_mask_without_a_run_does_nothing(engine):
    engine.set_head_mask(MASK)
    events, _ = run(engine, GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=4)))
    plain, _ = run(engine, GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=4)))
    assert not any(isinstance(e, HeadMaskChanged) for e in events)
    assert [e.logprob for e in events if isinstance(e, TokenGenerated)] == [
        e.logprob for e in plain if isinstance(e, TokenGenerated)]


def test_hidden_positions_equal_a_full_forward_with_that_mask(engine):
    hidden = (2, 4)
    events, finished = run(engine, GenerationRequest(
        prompt=PROMPT, settings=GenerationSettings(max_new_tokens=8), hidden_positions=(4, 2, 4),
        inspect=InspectSettings(keep_attention_rows=True)))
    started = events[0]
    assert started.hidden_positions == hidden
    P = len(started.prompt_ids)
    ids = list(started.prompt_ids) + list(finished.token_ids)
    T = len(ids)
    attention_mask = torch.ones(1, T, dtype=torch.long)
    attention_mask[0, list(hidden)] = 0
    eager = _edited_copy(_loaded(engine).model)
    logits = _logits(eager, ids, attention_mask=attention_mask, position_ids=torch.arange(T)[None])
    logp = torch.log_softmax(logits, -1)
    tokens = [e for e in events if isinstance(e, TokenGenerated)]
    assert [e.token_id for e in tokens] == logp[P - 1:-1].argmax(-1).tolist()
    np.testing.assert_allclose([e.logprob for e in tokens],
                               logp[torch.arange(P - 1, T - 1), torch.tensor(ids[P:])].numpy(), atol=1e-4)
    scored = next(e for e in events if isinstance(e, PromptScored))
    np.testing.assert_allclose(scored.logprob[1:], logp[torch.arange(P - 1), torch.tensor(ids[1:P])].numpy(),
                               atol=1e-4)
    # OPT's default positions (a cumulative sum of the mask) would have moved the later tokens.
    shifted = _logits(eager, ids, attention_mask=attention_mask)
    assert (shifted[P:] - logits[P:]).abs().max() > 1e-2

    # The captured attention gives the hidden keys no weight, from the prompt's queries and every decode step.
    rows = [scored.fed.attention_rows] + [e.fed.attention_rows for e in tokens if e.fed is not None]
    # The prefill and one step per generated token but the last (never fed): none missing, no layer missing.
    assert len(rows) == len(tokens) and all(len(step) == started.model.n_layers for step in rows)
    for step in rows:
        for layer in step:  # (H, q, k)
            assert np.abs(layer[..., list(hidden)]).max() < 1e-6
            np.testing.assert_allclose(layer.astype(np.float64).sum(-1), 1.0, atol=2e-3)  # float16 rows


@pytest.mark.parametrize("hidden, words", [((0,), "Position 0"), ((40,), "outside the prompt")])
def test_bad_hidden_positions_are_refused(engine, hidden, words):
    with pytest.raises(SettingsError, match=words) as err:
        engine.generate(GenerationRequest(prompt=PROMPT, hidden_positions=hidden), lambda e: None).result()
    assert "\n" not in str(err.value)


def test_head_mask_and_hidden_positions_together(engine):
    events, finished = run(engine, GenerationRequest(
        prompt=PROMPT, settings=GenerationSettings(max_new_tokens=5), head_mask=MASK, hidden_positions=(3,)))
    ids = list(events[0].prompt_ids) + list(finished.token_ids)
    P, T = len(events[0].prompt_ids), len(ids)
    attention_mask = torch.ones(1, T, dtype=torch.long)
    attention_mask[0, 3] = 0
    logp = torch.log_softmax(_logits(_edited_copy(_loaded(engine).model, MASK), ids, attention_mask=attention_mask,
                                     position_ids=torch.arange(T)[None]), -1)
    np.testing.assert_allclose([e.logprob for e in events if isinstance(e, TokenGenerated)],
                               logp[torch.arange(P - 1, T - 1), torch.tensor(ids[P:])].numpy(), atol=1e-4)
    assert isinstance(events[0], Started) and events[0].hidden_positions == (3,)


def test_hook_follows_the_dtype_of_a_bfloat16_model(engine, sequence):
    model = _loaded(engine).model
    mask = MASK[:2]  # scales 0 and 0.5 are exact in bfloat16, so both sides round alike
    ours = copy.deepcopy(model).to(torch.bfloat16)
    with HeadMask(ours, mask):
        masked = _logits(ours, sequence)
    # The engine's attention reads a whole sequence with SDPA: so does the reference, in bfloat16 too.
    reference = _logits(_edited_copy(model, mask, "sdpa").to(torch.bfloat16), sequence)
    torch.testing.assert_close(masked, reference, atol=2e-2, rtol=2e-2)
    plain = _logits(ours, sequence)  # the hooks are gone: the unmasked bfloat16 model
    # The mask moves the logits far more than the tolerance above, so a hook that did nothing would fail.
    assert (masked - plain).abs().max() > 10 * 2e-2


def test_hook_works_on_int8_dynamic_linear_layers(engine, sequence):
    """The int8 mode replaces out_proj by a dynamically quantized Linear; the pre-hook still scales its input."""
    from torch.ao.quantization import quantize_dynamic

    quantized = quantize_dynamic(copy.deepcopy(_loaded(engine).model), {torch.nn.Linear}, dtype=torch.qint8)
    out_proj = quantized.model.decoder.layers[0].self_attn.out_proj
    assert type(out_proj) is not torch.nn.Linear
    plain = _logits(quantized, sequence)
    with HeadMask(quantized, MASK):
        masked = _logits(quantized, sequence)

    d = quantized.config.hidden_size // quantized.config.num_attention_heads

    class ScaledInput(torch.nn.Module):  # the same scaling done by a wrapper module, not by a hook
        def __init__(self, inner, layer):
            super().__init__()
            self.inner, self.factor = inner, torch.ones(quantized.config.hidden_size)
            for m in MASK:
                if m.layer == layer:
                    self.factor[m.head * d:(m.head + 1) * d] = m.scale

        def forward(self, x):
            return self.inner(x * self.factor)

    for layer in {m.layer for m in MASK}:
        attn = quantized.model.decoder.layers[layer].self_attn
        attn.out_proj = ScaledInput(attn.out_proj, layer)
    torch.testing.assert_close(masked, _logits(quantized, sequence), atol=1e-6, rtol=1e-6)
    assert (masked - plain).abs().max() > 1e-2
