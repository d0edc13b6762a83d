"""Attribution and activation-patching results are kept with their run and come back from the file."""

import numpy as np
import pytest

from fakes import fake_trace
from opt_desktop.engine.messages.results import Attribution, Patching
from opt_desktop.session import Session
from opt_desktop.session.file import SessionFileError, load_session, save_session


def _attribution(trace, position, method="ig"):
    rng = np.random.default_rng(position)
    return Attribution(token_ids=np.asarray(trace.token_ids[:position], np.int64),
                       scores=rng.standard_normal(position).astype(np.float32), target_id=trace.token_ids[position],
                       alternative_id=None, method=method, steps=32 if method == "ig" else None, logprob=-1.5,
                       value=-1.5, baseline_value=-9.25, gradient_dtype="float32",
                       note="Gradients of the int8 model were computed in float32.")


def _patching(trace, heads=True):
    P, L, H = trace.n_prompt, trace.n_layers, trace.n_heads
    rng = np.random.default_rng(1)
    return Patching(clean_ids=np.asarray(trace.token_ids[:P], np.int64),
                    corrupt_ids=np.asarray([2] + [5] * (P - 1), np.int64), target_id=7, clean_prob=0.4,
                    corrupt_prob=0.05, prob=rng.random((L + 1, P)).astype(np.float32),
                    head_prob=rng.random((L, H)).astype(np.float32) if heads else np.zeros((0, 0), np.float32))


@pytest.mark.parametrize("heads", [True, False])
def test_attribution_and_patching_round_trip(tmp_path, heads):
    trace = fake_trace()
    pos = trace.n_prompt + 2
    trace.add_attribution(_attribution(trace, pos), pos)
    trace.add_attribution(_attribution(trace, pos, "ixg"), pos)  # replaces the first at that position
    trace.add_patching(_patching(trace, heads), "#2")
    path = tmp_path / "a.optsession"
    save_session(Session([trace]), path)
    back = load_session(path).runs[0]
    (got_pos, got), = back.attributions()
    want = _attribution(trace, pos, "ixg")
    assert got_pos == pos and got.method == "ixg" and got.steps is None and got.note == want.note
    np.testing.assert_array_equal(got.scores, want.scores)
    np.testing.assert_array_equal(got.token_ids, trace.token_ids[:pos])
    assert got.value - got.baseline_value == pytest.approx(7.75)
    (patched,) = back.patchings()
    want = _patching(trace, heads)
    np.testing.assert_array_equal(patched.prob, want.prob)
    np.testing.assert_array_equal(patched.head_prob, want.head_prob)
    np.testing.assert_array_equal(patched.corrupt_ids, want.corrupt_ids)
    assert (patched.clean_prob, patched.corrupt_prob, patched.target_id) == (0.4, 0.05, 7)


def test_a_patching_map_of_the_wrong_shape_is_refused(tmp_path):
    trace = fake_trace()
    p = _patching(trace)
    trace.add_patching(p)
    trace.analyses[-1].arrays["prob"] = np.zeros((trace.n_layers + 1, trace.n_prompt + 3), np.float32)
    path = tmp_path / "b.optsession"
    save_session(Session([trace]), path)
    with pytest.raises(SessionFileError, match="b.optsession"):
        load_session(path)


def test_the_html_report_shows_attribution_and_patching_escaped():
    from opt_desktop.session.export import export_html

    trace = fake_trace()
    pos = trace.n_prompt + 1
    trace.pieces[1] = "<script>alert(1)</script>"
    trace.add_attribution(_attribution(trace, pos), pos)
    trace.add_patching(_patching(trace))
    page = export_html(Session([trace]))
    assert f"at position {pos}?" in page and "integrated gradients, 32 steps" in page
    assert "Activation patching for" in page and "0.4 clean and 0.05 corrupted" in page
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_the_report_says_when_the_runs_are_too_close_to_normalise():
    """Issue 23: p = 0.05095 clean and 0.05133 corrupted; a map from 0 to 1 would span -16 … 17."""
    from opt_desktop.session.export import export_html

    trace = fake_trace()
    P, L = trace.n_prompt, trace.n_layers
    prob = np.full((L + 1, P), 0.05133, np.float32)
    prob[-1, -1], prob[-1, 0] = 0.04468, 0.057505
    trace.add_patching(Patching(clean_ids=np.asarray(trace.token_ids[:P], np.int64),
                                corrupt_ids=np.asarray([2] + [5] * (P - 1), np.int64), target_id=7,
                                clean_prob=0.05095, corrupt_prob=0.05133, prob=prob,
                                head_prob=np.zeros((0, 0), np.float32)))
    page = export_html(Session([trace]))
    assert "too close to normalise" in page and "0.05095 and 0.05133" in page
    assert "how much of the difference patching it recovers" not in page
    assert "Colour: -0.00665 (dark) to 0.00665 (yellow)" in page  # centred on no change, not 0 … 1
