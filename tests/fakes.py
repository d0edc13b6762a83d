"""Synthetic runs for view tests: the shapes and value ranges of a real run, made without torch."""

from __future__ import annotations

import numpy as np

from opt_desktop.engine.messages.events import (
    ATTENTION_STATS,
    HIDDEN_STATS,
    Finished,
    ModelInfo,
    PromptScored,
    Started,
    StepStats,
    TokenGenerated,
)
from opt_desktop.session import RunTrace


def fake_info(n_layers=3, n_heads=4, hidden=16) -> ModelInfo:
    return ModelInfo(
        source="demo-random", label="demo-random (tiny OPT, random weights)", n_layers=n_layers, n_heads=n_heads,
        hidden_size=hidden, word_embed_proj_dim=hidden, ffn_dim=4 * hidden, vocab_size=300,
        context_length=256, n_params=12345, dtype="float32", device="cpu", memory_bytes=50_000,
        pre_layer_norm=True, random_weights=True,
    )


def _stats(rng, start, q, L, H, D, keep_rows=False):
    hidden = {name: rng.random((L + 1, q)).astype(np.float32) for name in HIDDEN_STATS}
    hidden["argmax"] = rng.integers(0, D, (L + 1, q))
    attention = {name: rng.random((L, H, q)).astype(np.float32) for name in ATTENTION_STATS}
    residual = rng.standard_normal((L + 1, q, D)).astype(np.float16)
    rows = None
    if keep_rows:
        rows = []
        for _ in range(L):
            w = rng.random((H, q, start + q)).astype(np.float32)
            for i in range(q):
                w[:, i, start + i + 1:] = 0
            w /= w.sum(-1, keepdims=True)
            rows.append(w.astype(np.float16))
        rows = tuple(rows)
    return StepStats(start=start, hidden=hidden, attention=attention, residual=residual, attention_rows=rows)


def fake_events(n_prompt=4, n_gen=5, n_layers=3, n_heads=4, hidden=16, keep_rows=False, seed=0, finish=True):
    """Started, the first TokenGenerated, PromptScored, the other TokenGenerated, Finished, as the engine
    emits them (the prompt's statistics follow its first token)."""
    rng = np.random.default_rng(seed)
    info = fake_info(n_layers, n_heads, hidden)
    L, H, D, K = n_layers, n_heads, hidden, 10
    prompt_ids = tuple([2] + [int(i) for i in rng.integers(4, 300, n_prompt - 1)])  # plain ints, as the engine makes
    pieces = tuple(["</s>"] + [f"p{i}" for i in range(1, n_prompt)])
    events = [Started(model=info, prompt="prompt", prompt_ids=prompt_ids, prompt_pieces=pieces,
                      max_new_tokens=n_gen, seed=1, settings={}, inspect={"top_alternatives": K,
                                                                           "keep_attention_rows": keep_rows})]
    lp = -rng.random(n_prompt).astype(np.float32) * 5
    lp[0] = np.nan
    scored = (PromptScored(
        logprob=lp, entropy=rng.random(n_prompt).astype(np.float32) * 3,
        rank=np.r_[0, rng.integers(1, 50, n_prompt - 1)], top_ids=rng.integers(4, 300, (n_prompt, K)),
        top_probs=np.sort(rng.random((n_prompt, K)).astype(np.float32))[:, ::-1] / K,
        fed=_stats(rng, 0, n_prompt, L, H, D, keep_rows), elapsed_s=0.025))
    ids = []
    for i in range(n_gen):
        pos = n_prompt + i
        tid = int(rng.integers(4, 300))
        ids.append(tid)
        probs = tuple(float(x) for x in np.sort(rng.random(K))[::-1] / K)
        events.append(TokenGenerated(
            index=i, position=pos, token_id=tid, piece=f" w{i}", text=f" w{i}",
            logprob=float(np.log(probs[0])), rank=1, entropy=float(rng.random() * 3),
            top_ids=tuple(int(x) for x in rng.integers(4, 300, K)), top_probs=probs,
            top_pieces=tuple(f"alt{j}" for j in range(K)), elapsed_s=0.01 * (i + 2),
            fed=None if i == 0 else _stats(rng, pos - 1, 1, L, H, D, keep_rows)))
        if i == 0:
            events.append(scored)
    if not n_gen:
        events.append(scored)
    if finish:
        events.append(Finished(reason="length", text="".join(f" w{i}" for i in range(n_gen)),
                               token_ids=tuple(ids), n_tokens=n_gen, elapsed_s=0.1,
                               time_to_first_token_s=0.02, tokens_per_s=50.0))
    return events


def fake_trace(**kwargs) -> RunTrace:
    events = fake_events(**kwargs)
    trace = RunTrace(events[0])
    for ev in events[1:]:
        trace.apply(ev)
    return trace
