"""Generation behaviour a user relies on: same tokens as transformers, reproducible seeds, Stop, text."""

import threading
import time

import pytest
import torch

from models import run
from opt_desktop.engine import (
    Finished,
    GenerationRequest,
    GenerationSettings,
    InspectSettings,
    Notice,
    PromptError,
    PromptScored,
    Started,
    TokenGenerated,
)
from opt_desktop.engine.messages.errors import JobCancelled
from opt_desktop.engine.running.text import IncrementalDecoder

PROMPT = "The weather today is"


def _loaded(engine):
    return engine.call(lambda loaded: loaded).result()


def _tokens(events):
    return [e.token_id for e in events if isinstance(e, TokenGenerated)]


def test_greedy_equals_model_generate(engine, tokenizer):
    events, finished = run(engine, GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=12)))
    model = _loaded(engine).model
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        ref = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=1)[0, ids.shape[1]:].tolist()
    assert _tokens(events) == ref == list(finished.token_ids)
    assert finished.text == tokenizer.decode(ref, skip_special_tokens=True)


def test_event_order_and_summary(engine):
    events, finished = run(engine, GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=5)))
    # The prompt's statistics come right after the first token: they are not on the way to it.
    assert [type(e) for e in events] == [Started, TokenGenerated, PromptScored] + [TokenGenerated] * 4 + [Finished]
    tokens = [e for e in events if isinstance(e, TokenGenerated)]
    assert tokens[0].elapsed_s <= events[2].elapsed_s <= tokens[1].elapsed_s
    assert [t.index for t in tokens] == list(range(5))
    assert [t.position for t in tokens] == [len(events[0].prompt_ids) + i for i in range(5)]
    assert tokens[0].fed is None and all(t.fed.start == t.position - 1 for t in tokens[1:])
    assert all(len(t.top_ids) == 10 and t.top_probs[0] >= t.top_probs[-1] for t in tokens)
    assert all(0 < t.elapsed_s for t in tokens) and tokens[-1].elapsed_s >= tokens[0].elapsed_s
    assert finished.reason == "length" and finished.n_tokens == 5
    assert finished.time_to_first_token_s > 0 and finished.tokens_per_s > 0
    # A character still incomplete at the end is only in the summary's text.
    assert finished.text.startswith("".join(t.text for t in tokens))
    assert finished.text == engine.tokenizer.decode(list(finished.token_ids), skip_special_tokens=True)


def test_seeded_sampling_is_reproducible(engine):
    settings = GenerationSettings(max_new_tokens=10, do_sample=True, temperature=1.5, top_k=0, seed=1234)
    a = _tokens(run(engine, GenerationRequest(prompt=PROMPT, settings=settings))[0])
    b = _tokens(run(engine, GenerationRequest(prompt=PROMPT, settings=settings))[0])
    c = _tokens(run(engine, GenerationRequest(prompt=PROMPT, settings=settings.replace(seed=99)))[0])
    assert a == b
    assert a != c


def test_random_seed_is_reported_and_replays(engine):
    settings = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=1.5, top_k=0)
    events, _ = run(engine, GenerationRequest(prompt=PROMPT, settings=settings))
    seed = events[0].seed
    again, _ = run(engine, GenerationRequest(prompt=PROMPT, settings=settings.replace(seed=seed)))
    assert _tokens(events) == _tokens(again)


def test_raw_distribution_is_before_temperature(engine):
    """A token's logprob is the model's, whatever the sampling temperature."""
    greedy, _ = run(engine, GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=1)))
    hot, _ = run(engine, GenerationRequest(prompt=PROMPT, settings=GenerationSettings(
        max_new_tokens=1, do_sample=True, temperature=5.0, top_k=3, seed=0)))
    g, h = (next(e for e in events if isinstance(e, TokenGenerated)) for events in (greedy, hot))
    assert g.top_ids == h.top_ids and g.entropy == pytest.approx(h.entropy, abs=1e-6)


def test_stop_mid_run_keeps_partial_result(engine):
    stop = threading.Event()
    events = []

    def emit(ev):
        events.append(ev)
        if isinstance(ev, TokenGenerated) and ev.index == 2:
            stop.set()  # as if the person pressed Stop while the third token was shown

    finished = engine.generate(GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=50)),
                               emit, stop).result()
    assert finished.reason == "cancelled"
    assert finished.n_tokens == 3  # no forward step after the stop
    assert len(_tokens(events)) == 3 and isinstance(events[-1], Finished)


def test_stop_before_start_means_the_run_never_starts(engine):
    stop = threading.Event()
    stop.set()
    events = []
    with pytest.raises(JobCancelled):
        engine.generate(GenerationRequest(prompt=PROMPT), events.append, stop).result()
    assert events == []  # no Started: there is no run to record


def test_eos_finishes_with_reason_eos(engine):
    model = _loaded(engine).model

    def force_eos(module, args, output):
        out = torch.full_like(output, -1e4)
        out[..., 2] = 0.0
        return out

    handle = model.lm_head.register_forward_hook(force_eos)
    try:
        events, finished = run(engine, GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=9)))
    finally:
        handle.remove()
    assert finished.reason == "eos" and finished.n_tokens == 1 and finished.text == ""


def _force_tokens(model, script):
    """Make the model emit `script` token by token (a hook on lm_head, the way a fine-tune would)."""
    step = {"n": 0}

    def hook(module, args, output):
        out = torch.full_like(output, -1e4)
        out[..., script[min(step["n"], len(script) - 1)]] = 0.0
        step["n"] += 1
        return out

    return model.lm_head.register_forward_hook(hook)


def test_emoji_split_over_tokens_streams_whole(engine, tokenizer):
    text = " café 😀 ok 🇫🇷!"
    script = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(script) > len(text.split())  # the emoji really are split into byte pieces
    handle = _force_tokens(_loaded(engine).model, script)
    try:
        events, finished = run(engine, GenerationRequest(prompt=PROMPT, settings=GenerationSettings(
            max_new_tokens=len(script))))
    finally:
        handle.remove()
    pieces = [e.text for e in events if isinstance(e, TokenGenerated)]
    assert _tokens(events) == script
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == text == finished.text
    assert "" in pieces  # some tokens held back until their character was whole


def test_stop_string_finishes_with_reason(engine, tokenizer):
    script = tokenizer(" one two. three four", add_special_tokens=False)["input_ids"]
    handle = _force_tokens(_loaded(engine).model, script)
    try:
        _, finished = run(engine, GenerationRequest(prompt=PROMPT, settings=GenerationSettings(
            max_new_tokens=20, stop_strings=("two.",))))
    finally:
        handle.remove()
    assert finished.reason == "stop_string"
    assert finished.text == " one two."


def test_prompt_longer_than_context_is_refused(engine):
    ctx = _loaded(engine).info.context_length
    events = []
    with pytest.raises(PromptError, match="reads at most"):
        engine.generate(GenerationRequest(prompt_ids=tuple([2] + [100] * ctx)), events.append).result()
    assert events == []


def test_answer_is_clamped_to_the_context(engine):
    ctx = _loaded(engine).info.context_length
    prompt_ids = tuple([2] + [100] * (ctx - 4))
    events, finished = run(engine, GenerationRequest(prompt_ids=prompt_ids, settings=GenerationSettings(
        max_new_tokens=50), inspect=InspectSettings(attention_stats=False)))
    assert any(isinstance(e, Notice) and "lowered" in e.message for e in events)
    assert finished.n_tokens == 3 and finished.reason == "length"


def test_prompt_ids_continue_a_run(engine):
    first, f1 = run(engine, GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=4)))
    both, _ = run(engine, GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=8)))
    cont, _ = run(engine, GenerationRequest(prompt_ids=first[0].prompt_ids + f1.token_ids,
                                            settings=GenerationSettings(max_new_tokens=4)))
    assert _tokens(first) + _tokens(cont) == _tokens(both)


def test_incremental_decoder_never_emits_broken_characters(tokenizer):
    text = "Grüße 👩‍👩‍👧 and 日本語 ✓"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    dec = IncrementalDecoder(tokenizer)
    parts = [dec.push(i) for i in ids]
    assert all("\ufffd" not in p for p in parts)
    assert "".join(parts) + dec.flush() == text


def test_incomplete_character_at_the_end_is_flushed(tokenizer):
    ids = tokenizer("a😀", add_special_tokens=False)["input_ids"]
    dec = IncrementalDecoder(tokenizer)
    parts = [dec.push(i) for i in ids[:-1]]  # the emoji's last byte never comes
    assert "".join(parts) == "a"
    assert dec.flush() == "\ufffd"


def test_logit_lens_is_served_during_a_generation(engine):
    """The lens of a streamed token arrives while the run goes on, not after it."""
    rows_seen = threading.Event()
    state = {}

    def emit(ev):
        if isinstance(ev, TokenGenerated) and ev.fed is not None and "rows" not in state:
            state["rows"], state["pos"] = ev.fed.residual[:, 0], ev.fed.start
            rows_seen.set()
        if isinstance(ev, TokenGenerated):
            time.sleep(0.005)  # a slower model: the run lasts well over the lens's few milliseconds

    ctx = _loaded(engine).info.context_length
    run_future = engine.generate(GenerationRequest(prompt=PROMPT, settings=GenerationSettings(
        max_new_tokens=min(200, ctx - 16))), emit)
    assert rows_seen.wait(30)
    lens = engine.logit_lens(state["rows"], None, state["pos"]).result(timeout=30)
    assert not run_future.done()  # served between two decode steps
    assert lens.position == state["pos"] and lens.top_ids.shape[1] == 5
    assert run_future.result().n_tokens > 0


@pytest.mark.parametrize("prompt, says", [("", "start-of-text token alone"), ("   ", "only blank space")])
def test_an_empty_prompt_is_allowed_and_says_so(engine, prompt, says):
    events, finished = run(engine, GenerationRequest(prompt=prompt, settings=GenerationSettings(max_new_tokens=3)))
    assert finished.reason in ("length", "eos") and finished.n_tokens >= 1
    started = events[0]
    assert any(says in n for n in started.notices)
    assert [e.message for e in events if isinstance(e, Notice)] == list(started.notices)
