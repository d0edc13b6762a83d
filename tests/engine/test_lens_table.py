"""The lens of every position, against plain transformers forwards computed here, for both families.

The reference rows come from `output_hidden_states` (whose last entry is after final_layer_norm and
project_out, so the last layer's own output is taken from a forward hook on it instead) and are read
through the head by hand; head masks are applied by scaling out_proj weights of a copy of the model
(no hooks), hidden positions with the attention mask and explicit position ids.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from models import head_scaled_copy, loaded_of
from opt_desktop.engine import GenerationRequest, GenerationSettings, HeadScale
from opt_desktop.engine.messages.errors import JobCancelled, SettingsError
from opt_desktop.engine.messages.job_context import JobContext
from opt_desktop.engine.running.generate import run_generation
from opt_desktop.engine.running.lens import logit_lens
from opt_desktop.engine.analyses.lens_table import lens_table
from opt_desktop.session import RunTrace

MASK = (HeadScale(layer=0, head=2, scale=0.0), HeadScale(layer=2, head=1, scale=1.5))


def _rows(ref, ids, hidden=(), segments=None):
    """(L+1, T, D) float32 residual rows of a plain forward (or of forwards over `segments`:
    [(start, end, model)] sharing one cache, for a mask changed part-way)."""
    T = len(ids)
    mask = torch.ones(1, T, dtype=torch.long)
    mask[0, list(hidden)] = 0
    segments = segments or [(0, T, ref)]
    cache = None
    parts = []
    from transformers import DynamicCache

    cache = DynamicCache(config=ref.config)
    for a, b, model in segments:
        last = []
        handle = model.model.decoder.layers[-1].register_forward_hook(lambda m, args, out: last.append(
            (out[0] if isinstance(out, tuple) else out)[0]))
        try:
            with torch.no_grad():
                out = model.model.decoder(input_ids=torch.tensor([ids[a:b]]), attention_mask=mask[:, :b],
                                          position_ids=torch.arange(a, b)[None], cache=cache, use_cache=True,
                                          output_hidden_states=True)
        finally:
            handle.remove()
        hs = [h[0] for h in out.hidden_states[:-1]] + [last[0]]  # hidden_states[-1] is after the head's norm
        parts.append(torch.stack(hs))
    return torch.cat(parts, 1)


def _read(model, rows):
    """Rows read through the head by hand: (L+1, T, V) float64 log-probabilities."""
    dec = model.model.decoder
    x = rows
    if dec.final_layer_norm is not None:
        x = dec.final_layer_norm(x)
    if dec.project_out is not None:
        x = dec.project_out(x)
    with torch.no_grad():
        return torch.log_softmax(model.lm_head(x).double(), -1)


def _assert_table(table, logp, ids, k):
    L1, T = logp.shape[:2]
    assert table.top_ids.shape == (L1, T, k) and table.target_logprob.shape == (L1, T)
    top = logp.topk(k, -1)
    # The ids it lists are the k most likely (up to float rounding between near-ties), with their probabilities.
    listed = logp.gather(-1, torch.from_numpy(table.top_ids))
    np.testing.assert_allclose(listed.numpy(), top.values.numpy(), atol=2e-5)
    assert (table.top_ids == top.indices.numpy()).mean() > 0.95
    np.testing.assert_allclose(table.top_probs, top.values.exp().numpy(), atol=2e-5)
    targets = torch.tensor(ids[1:])
    tgt = logp[:, :-1].gather(-1, targets[None, :, None].expand(L1, -1, 1)).squeeze(-1)
    np.testing.assert_allclose(table.target_logprob[:, :-1], tgt.numpy(), atol=2e-4)
    eps = 1e-5  # a rank may differ where another token is within rounding of the target
    low = (logp[:, :-1] > tgt[..., None] + eps).sum(-1) + 1
    high = (logp[:, :-1] > tgt[..., None] - eps).sum(-1) + 1
    assert ((low.numpy() <= table.target_rank[:, :-1]) & (table.target_rank[:, :-1] <= high.numpy())).all()

    assert np.isnan(table.target_logprob[:, -1]).all() and (table.target_rank[:, -1] == 0).all()


@pytest.fixture(scope="module")
def sequence(tokenizer):
    prompt = tokenizer("The weather today is")["input_ids"]
    return prompt + [500 % len(tokenizer), 77, 1200 % len(tokenizer), 9, 42, 3000 % len(tokenizer), 11, 300]


def test_every_row_and_position_equals_a_plain_forward(engine, sequence):
    loaded = loaded_of(engine)
    seen = []
    job = JobContext(on_event=lambda p: seen.append((p.done, p.total)))
    table = engine.call(lambda ld: lens_table(ld, sequence, top_k=4, chunk=3, job=job)).result()
    ref = head_scaled_copy(loaded.model)
    logp = _read(ref, _rows(ref, sequence))
    _assert_table(table, logp, sequence, 4)
    assert seen[-1] == (len(sequence), len(sequence)) and len(seen) == -(-len(sequence) // 3)
    # The last row is the model's own next-token distribution.
    with torch.no_grad():
        own = torch.log_softmax(ref(torch.tensor([sequence])).logits[0].double(), -1)
    np.testing.assert_array_equal(table.top_ids[-1], own.topk(4, -1).indices.numpy())
    np.testing.assert_allclose(table.target_logprob[-1, :-1],
                               own[:-1].gather(-1, torch.tensor(sequence[1:])[:, None]).squeeze(-1).numpy(), atol=2e-4)
    # Every id it lists is named, so a file can show the table without a tokenizer.
    assert set(np.unique(table.top_ids).tolist()) <= set(table.pieces)


def test_the_runs_interventions_are_respected(engine, sequence):
    loaded = loaded_of(engine)
    table = engine.call(lambda ld: lens_table(ld, sequence, hidden_positions=(2,), mask_schedule=((0, MASK),),
                                              top_k=3, chunk=4)).result()
    ref = head_scaled_copy(loaded.model, MASK)
    _assert_table(table, _read(ref, _rows(ref, sequence, hidden=(2,))), sequence, 3)
    plain = engine.call(lambda ld: lens_table(ld, sequence, top_k=3)).result()
    assert not np.allclose(plain.target_logprob[-1, :-1], table.target_logprob[-1, :-1], atol=1e-3)


def test_a_mask_changed_part_way_applies_from_its_position(engine, sequence):
    loaded = loaded_of(engine)
    change = 7
    table = engine.call(lambda ld: lens_table(ld, sequence, mask_schedule=((0, ()), (change, MASK)),
                                              top_k=3, chunk=5)).result()
    plain, masked = head_scaled_copy(loaded.model), head_scaled_copy(loaded.model, MASK)
    rows = _rows(plain, sequence, segments=[(0, change, plain), (change, len(sequence), masked)])
    _assert_table(table, _read(plain, rows), sequence, 3)


def test_it_reads_a_run_as_it_was_made(engine):
    """A real run whose head mask changed while it streamed: the lens's last row gives each
    generated token the log-probability the run recorded for it, and the rows the run keeps in
    memory are exact: the live lens of every position is the table's."""
    loaded = loaded_of(engine)
    polls = []

    def mask_change():
        polls.append(1)
        return MASK if len(polls) == 3 else None

    events = []
    request = GenerationRequest(prompt="Once upon a time there", settings=GenerationSettings(max_new_tokens=8),
                                hidden_positions=(2,))
    engine.call(lambda ld: run_generation(ld, request, JobContext(on_event=events.append),
                                          mask_change=mask_change)).result()
    trace = RunTrace(events[0])
    for e in events[1:]:
        trace.apply(e)
    assert trace.mask_changes and trace.mask_changes[0].index == 3
    table = engine.call(lambda ld: lens_table(ld, top_k=5, **trace.lens_request())).result()
    P, T = trace.n_prompt, trace.length
    np.testing.assert_allclose(table.target_logprob[-1, P - 1:T - 1], trace.logprob[P:T], atol=2e-4)
    # The live lens of the kept rows, position by position: float32 rows, so the same numbers and
    # the same top-1 in every cell (float16 rows changed the top-1 in about 3 cells of 8,000).
    for pos in range(T - 1):
        assert trace.residual_rows(pos).dtype == np.float32
        live = logit_lens(loaded, trace.residual_rows(pos), trace.next_token(pos), pos, top_k=5)
        np.testing.assert_allclose(table.target_logprob[:, pos], live.target_logprob, atol=2e-4)
        np.testing.assert_array_equal(table.top_ids[:, pos, 0], live.top_ids[:, 0])
    trace.set_lens_table(table)
    shown = trace.lens_at(P)
    assert shown.target_id == trace.token_ids[P + 1] and shown.top_pieces[-1][0] == table.pieces[int(table.top_ids[-1, P, 0])]


def test_stop_between_chunks_raises_and_keeps_nothing(engine, sequence):
    stop = threading.Event()
    done = []

    def progress(p):
        done.append(p.done)
        stop.set()

    with pytest.raises(JobCancelled):
        engine.call(lambda ld: lens_table(ld, sequence, chunk=2, job=JobContext(stop=stop, on_event=progress))).result()
    assert done == [2]  # one chunk ran, then the stop was seen


def test_bad_requests_are_one_line(engine, sequence):
    with pytest.raises(SettingsError, match="Layer 9 does not exist"):
        engine.call(lambda ld: lens_table(ld, sequence, mask_schedule=((0, [(9, 0, 0.0)]),))).result()
    with pytest.raises(SettingsError, match="increasing positions"):
        engine.call(lambda ld: lens_table(ld, sequence, mask_schedule=((0, ()), (0, MASK)))).result()
    with pytest.raises(SettingsError, match="from 1 to 100"):
        engine.call(lambda ld: lens_table(ld, sequence, top_k=0)).result()


def test_exact_rows_are_kept_up_to_opt_350m():
    """Residual rows stay float32 in memory while a whole context of them is small (opt-125m,
    opt-350m); beyond that they are float16 and the table after the run is the exact lens."""
    from transformers import OPTConfig

    from opt_desktop.engine.running.capture import residual_dtype

    def config(layers, hidden):
        return OPTConfig(num_hidden_layers=layers, hidden_size=hidden, max_position_embeddings=2048)

    assert residual_dtype(config(12, 768)) == torch.float32  # opt-125m
    assert residual_dtype(config(24, 1024)) == torch.float32  # opt-350m
    assert residual_dtype(config(24, 2048)) == torch.float16  # opt-1.3b
