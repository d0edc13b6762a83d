"""A run's trace takes the prompt's statistics whenever they arrive: the engine reports them after
the first token (they are not on its way), and a run stopped in between has its token without them."""

import numpy as np

from fakes import fake_events
from opt_desktop.engine.messages.events import ATTENTION_STATS, HIDDEN_STATS, PromptScored, TokenGenerated
from opt_desktop.session import RunTrace


def _grown(events) -> RunTrace:
    trace = RunTrace(events[0])
    for ev in events[1:]:
        trace.apply(ev)
    return trace


def _arrays(trace: RunTrace) -> dict:
    out = {"logprob": trace.logprob, "entropy": trace.entropy, "rank": trace.rank, "top_ids": trace.top_ids,
           "top_probs": trace.top_probs, "token_ids": np.array(trace.token_ids)}
    out.update({f"hidden {n}": trace.hidden(n) for n in HIDDEN_STATS})
    out.update({f"attention {n}": trace.attention(n) for n in ATTENTION_STATS})
    out.update({f"residual {t}": trace.residual_rows(t) for t in range(trace.length - 1)})
    return out


def test_prompt_statistics_after_the_first_token_fill_the_same_trace():
    events = fake_events(n_prompt=6, n_gen=4, keep_rows=True)
    assert isinstance(events[1], TokenGenerated) and isinstance(events[2], PromptScored)  # the engine's order
    prompt_first = [events[0], events[2], events[1]] + events[3:]
    late, early = _grown(events), _grown(prompt_first)
    a, b = _arrays(late), _arrays(early)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert np.isfinite(late.logprob).all() == np.isfinite(early.logprob).all()
    for layer, head in ((0, 0), (2, 3)):
        np.testing.assert_array_equal(late.attention_matrix(layer, head), early.attention_matrix(layer, head))
    assert late.text == early.text and late.finished == early.finished


def test_a_run_stopped_before_its_prompt_statistics_keeps_its_first_token():
    events = fake_events(n_prompt=5, n_gen=3, finish=False)
    trace = _grown(events[:2])  # Started and the first token; Stop landed while the prompt was reduced
    P = trace.n_prompt
    assert trace.length == P + 1 and trace.generated_ids == [events[1].token_id]
    assert trace.logprob[P] == np.float32(events[1].logprob)
    assert np.isnan(trace.logprob[:P]).all() and np.isnan(trace.hidden("norm")[:, :P]).all()
    assert trace.residual_rows(0) is None
