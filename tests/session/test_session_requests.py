"""Rerun and fork requests rebuilt from recorded runs, and the comparison of two runs."""

import dataclasses

import numpy as np
import pytest
import torch

from session_helpers import generate, trace_from
from opt_desktop.engine import GenerationRequest, GenerationSettings, HeadScale, InspectSettings, SettingsError
from opt_desktop.engine.messages.events import HeadMaskChanged
from opt_desktop.session import compare_runs, fork_request, rerun_requests

PROMPT = "The quick brown fox jumps"


@pytest.fixture(scope="module")
def greedy(pre_engine):
    return generate(pre_engine, GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=8)))


def _reference_greedy(engine, prefix: list[int], n: int) -> list[int]:
    """A plain decode loop over the model itself: argmax of the last logits, no cache, no engine."""
    model = engine.call(lambda loaded: loaded.model).result()
    ids = list(prefix)
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids]), use_cache=False).logits[0, -1].argmax())
            ids.append(nxt)
            if nxt == model.config.eos_token_id:
                break
    return ids[len(prefix):]


@pytest.mark.parametrize("settings", [
    GenerationSettings(max_new_tokens=8),
    GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.3),  # seed picked by the engine
], ids=["greedy", "sampled"])
def test_rerun_reproduces_the_run(pre_engine, settings):
    first = generate(pre_engine, GenerationRequest(
        prompt=PROMPT, settings=settings, inspect=InspectSettings(top_alternatives=3),
        head_mask=(HeadScale(layer=2, head=1),), hidden_positions=(1,)))
    load, request = rerun_requests(first)
    info = first.started.model
    assert (load.source, load.dtype, load.device) == (info.source, info.dtype, "cpu")
    assert request.prompt_ids == first.started.prompt_ids and request.settings.seed == first.started.seed
    assert request.head_mask == (HeadScale(layer=2, head=1, scale=0.0),) and request.hidden_positions == (1,)
    assert request.inspect.top_alternatives == 3
    again = generate(pre_engine, request)
    assert again.token_ids == first.token_ids
    # The same tokens; their log-probabilities equal up to float32 rounding, since "auto" may compute
    # with another thread count under another load (sums in another order differ in the last bits).
    np.testing.assert_allclose(again.logprob, first.logprob, rtol=1e-5, atol=1e-5)
    assert again.started.head_mask == first.started.head_mask == ((2, 1, 0.0),)
    if settings.do_sample:  # the recorded seed is what makes it repeat
        other_seed = request.replace(settings=request.settings.replace(seed=first.started.seed + 1))
        assert generate(pre_engine, other_seed).token_ids != first.token_ids


def test_fork_continues_from_the_edited_prefix(pre_engine, greedy):
    position = greedy.n_prompt + 3
    token = int(greedy.top_ids[position, 1])  # the runner-up there
    request = fork_request(greedy, position, token)
    assert request.prompt_ids == tuple(greedy.token_ids[:position]) + (token,)
    assert request.settings == GenerationSettings(max_new_tokens=8, seed=greedy.started.seed)
    assert request.prompt == PROMPT + "".join(greedy.text_parts[:3]) + greedy.known_pieces()[token]
    fork = generate(pre_engine, request)
    assert fork.generated_ids == _reference_greedy(pre_engine, list(request.prompt_ids), 8)

    cmp = compare_runs(greedy, fork)
    assert cmp.first_diff == position and cmp.same_model
    assert cmp.length == max(greedy.length, fork.length)
    # Up to the fork both runs read the same prefix, so each gave the other's token its own probability.
    np.testing.assert_allclose(cmp.prob_b_of_a[1:position], cmp.prob_a[1:position], rtol=1e-5)
    # At the fork, b's distribution is a's: a's token has the probability a gave it, from b's alternatives.
    assert cmp.prob_b_of_a[position] == pytest.approx(cmp.prob_a[position], rel=1e-5)
    assert cmp.prob_b[position] == pytest.approx(float(greedy.top_probs[position, 1]), rel=1e-5)
    assert np.isnan(cmp.prob_b_of_a[position + 1:]).all() and np.isnan(cmp.prob_a[0])
    np.testing.assert_array_equal(cmp.entropy_a[: greedy.length], greedy.entropy)


def test_fork_within_the_prompt(pre_engine, greedy):
    request = fork_request(greedy, 2, greedy.token_ids[2] + 1, GenerationSettings(max_new_tokens=2))
    assert request.prompt_ids == tuple(greedy.token_ids[:2]) + (greedy.token_ids[2] + 1,)
    assert request.settings.max_new_tokens == 2 and request.settings.seed is None


def test_fork_keeps_the_interventions_in_force(greedy):
    started = dataclasses.replace(greedy.started, head_mask=((0, 1, 0.0),), hidden_positions=(1, 3))
    trace = trace_from([started])
    trace.token_ids, trace.text_parts = list(greedy.token_ids), list(greedy.text_parts)
    trace.mask_changes = [HeadMaskChanged(index=2, head_mask=((1, 1, 0.5),))]
    early = fork_request(trace, trace.n_prompt + 1, 5)
    late = fork_request(trace, trace.n_prompt + 4, 5)
    assert early.head_mask == (HeadScale(layer=0, head=1),)
    assert late.head_mask == (HeadScale(layer=1, head=1, scale=0.5),)
    assert fork_request(trace, 3, 5).hidden_positions == (1,) and late.hidden_positions == (1, 3)


@pytest.mark.parametrize("position", [0, -1, "end"])
def test_fork_position_out_of_range(greedy, position):
    position = greedy.length if position == "end" else position
    with pytest.raises(SettingsError, match=f"position 1 to {greedy.length - 1} of this run, not {position}"):
        fork_request(greedy, position, 5)


def test_fork_token_out_of_range(greedy):
    vocab = greedy.started.model.vocab_size
    with pytest.raises(SettingsError, match=f"Token id {vocab} is outside"):
        fork_request(greedy, greedy.n_prompt, vocab)


def test_compare_identical_and_prefix_runs(pre_engine, greedy):
    same = compare_runs(greedy, greedy)
    assert same.first_diff is None and same.length == greedy.length
    np.testing.assert_array_equal(same.prob_b_of_a[1:], same.prob_a[1:])
    shorter = generate(pre_engine, GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=3)))
    assert shorter.token_ids == greedy.token_ids[: shorter.length]
    cmp = compare_runs(greedy, shorter)
    assert cmp.first_diff == shorter.length and cmp.length == greedy.length
    assert np.isnan(cmp.prob_b[shorter.length:]).all() and np.isnan(cmp.prob_b_of_a[shorter.length:]).all()
    other = dataclasses.replace(greedy.started, model=dataclasses.replace(greedy.started.model, dtype="bfloat16"))
    assert not compare_runs(greedy, trace_from([other])).same_model
