"""The heads a run names as previous-token, induction and sink heads: on a model built to have them
(tests/induction_model.py), against the scores' definitions over transformers' eager weights, and
from a saved file with no model, including a file written before the statistics existed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from induction_model import INDUCTION, PREVIOUS, SINK
from models import loaded_of
from role_reference import eager_attentions, hand_scores, targets, without_role_statistics
from opt_desktop.engine import GenerationRequest, GenerationSettings, InspectSettings
from opt_desktop.session import Session
from opt_desktop.session.file import load_session, save_session
from opt_desktop.session.head_roles import MARGIN, THRESHOLD, earlier_copies, per_query, role_scores
from fakes import fake_events
from session_helpers import generate, trace_from

REPEATED = "The cat sat on the mat. The cat sat on the mat."


def _run(engine, prompt, n=6, rows=False):
    return generate(engine, GenerationRequest(prompt=prompt, settings=GenerationSettings(max_new_tokens=n),
                                              inspect=InspectSettings(keep_attention_rows=rows)))


@pytest.fixture(scope="module")
def repeated(induction_engine):
    return _run(induction_engine, REPEATED, rows=True)


def _heads(marks):
    return [(m.layer, m.head) for m in marks]


def test_the_built_heads_are_named_and_no_other(repeated):
    scores = role_scores(repeated)
    marked = scores.marked()
    assert _heads(marked["previous"]) == [PREVIOUS]
    assert _heads(marked["induction"]) == [INDUCTION]
    assert _heads(marked["sink"]) == [SINK]
    assert scores.scores["induction"][INDUCTION] > 0.9 and scores.baseline["induction"][INDUCTION] < 0.2
    assert [m.role for m in scores.roles_of(*INDUCTION)] == ["induction"]
    assert scores.roles_of(0, 3) == []
    # The greedy text goes on copying the sentence: generated queries count too.
    assert repeated.text.startswith(" The cat")
    assert scores.n_copies > len([t for t in earlier_copies(repeated.token_ids[:repeated.n_prompt]) if t])


def test_scores_are_the_definitions_over_eager_weights(induction_engine, repeated):
    A = eager_attentions(loaded_of(induction_engine).model, repeated.token_ids)
    ref = hand_scores(A, repeated.token_ids, repeated.length - 1)  # the last token is never fed
    scores = role_scores(repeated)
    assert scores.n_queries == repeated.length - 2
    assert scores.n_copies == sum(bool(targets(repeated.token_ids, t)) for t in range(1, repeated.length - 1))
    for role in ("previous", "induction", "sink"):
        np.testing.assert_allclose(scores.scores[role], ref[role][0], atol=1e-5)
        np.testing.assert_allclose(scores.baseline[role], ref[role][1], atol=1e-5)


def test_a_run_without_a_repeated_token_has_no_induction_score(induction_engine):
    trace = _run(induction_engine, "A quick brown fox jumps over my lazy dog", n=1)
    assert not earlier_copies(trace.token_ids)[:-1].any()  # the last token is never fed
    scores = role_scores(trace)
    assert scores.scores["induction"] is None and scores.n_copies == 0
    assert "no token has occurred before" in scores.why_not["induction"]
    assert scores.marked()["induction"] == []
    assert _heads(scores.marked()["previous"]) == [PREVIOUS]


def test_attending_evenly_where_most_keys_follow_a_copy_is_not_induction():
    """One token repeated: nearly every key follows a copy, so a head attending evenly over keys 0..t
    scores high on induction, and its baseline is exactly as high: it is not marked."""
    T = 30
    events = fake_events(n_prompt=T, n_gen=1)
    events[0] = dataclasses.replace(events[0], prompt_ids=(2,) + (7,) * (T - 1))
    trace = trace_from(events)
    copies = earlier_copies(trace.token_ids)
    t = np.arange(trace.length)
    fed = t < trace.length - 1
    trace.attention("sink")[...] = np.where(fed, 1.0 / (t + 1), np.nan)
    trace.attention("previous")[...] = np.where(fed & (t > 0), 1.0 / (t + 1), np.nan)
    trace.attention("induction")[...] = np.where(fed & (copies > 0), copies / (t + 1), np.nan)
    scores = role_scores(trace)
    assert (scores.scores["induction"] >= THRESHOLD).all()
    np.testing.assert_allclose(scores.baseline["induction"], scores.scores["induction"], rtol=1e-6)
    assert scores.marked()["induction"] == []


def test_earlier_copies_counts_the_targets():
    ids = [2, 5, 6, 5, 5, 6, 2, 9]
    expected = [sum(ids[j] == ids[t] for j in range(t - 1)) for t in range(len(ids))]
    assert earlier_copies(ids).tolist() == expected == [0, 0, 0, 1, 1, 1, 1, 0]


def _saved(trace, path):
    save_session(Session([trace]), path)
    return path


def test_a_reopened_session_names_the_heads_without_a_model(repeated, tmp_path):
    reopened = load_session(_saved(repeated, tmp_path / "run.optsession")).runs[0]
    assert reopened.missing_attention == frozenset()
    a, b = role_scores(repeated), role_scores(reopened)
    for role in ("previous", "induction", "sink"):
        np.testing.assert_array_equal(a.scores[role], b.scores[role])
    assert a.marked() == b.marked()


def test_an_older_file_with_rows_computes_the_scores_from_them(repeated, tmp_path):
    old = load_session(without_role_statistics(_saved(repeated, tmp_path / "old.optsession"))).runs[0]
    assert old.missing_attention == {"previous", "induction"}
    assert np.isnan(old.attention("induction")).all()
    scores = role_scores(old)
    assert scores.from_rows
    exact = role_scores(repeated)
    for role in ("previous", "induction", "sink"):
        np.testing.assert_allclose(scores.scores[role], exact.scores[role], atol=2e-3)  # float16 rows
    assert scores.marked().keys() == exact.marked().keys()
    assert {r: _heads(m) for r, m in scores.marked().items()} == {r: _heads(m) for r, m in exact.marked().items()}
    np.testing.assert_allclose(per_query(old, "previous"), repeated.attention("previous"), atol=2e-3, equal_nan=True)
    # Saved again, the statistics stay missing rather than becoming NaN arrays as if captured.
    again = load_session(_saved(old, tmp_path / "again.optsession")).runs[0]
    assert again.missing_attention == {"previous", "induction"}


def test_an_older_file_without_rows_says_what_is_missing(induction_engine, tmp_path):
    trace = _run(induction_engine, REPEATED, n=3)
    old = load_session(without_role_statistics(_saved(trace, tmp_path / "old.optsession"))).runs[0]
    scores = role_scores(old)
    assert scores.scores["previous"] is None and scores.scores["induction"] is None
    assert "not in this file" in scores.why_not["induction"]
    assert _heads(scores.marked()["sink"]) == [SINK]  # the sink weight was always recorded


def test_a_run_without_attention_statistics_has_no_scores(induction_engine):
    trace = generate(induction_engine, GenerationRequest(
        prompt=REPEATED, settings=GenerationSettings(max_new_tokens=2),
        inspect=InspectSettings(attention_stats=False)))
    assert role_scores(trace) is None
