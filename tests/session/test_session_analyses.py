"""Analyses kept with their run: the lens of every position and head importance survive a save and a
reopen with no model; other kinds (attribution, patching: issue 17) round-trip unchanged."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import mutants
from session_helpers import generate
from opt_desktop.engine import GenerationRequest, GenerationSettings, HeadScale
from opt_desktop.engine.analyses.lens_table import lens_table
from opt_desktop.engine.messages.results import HeadImportance
from opt_desktop.session import Session, SessionFileError, load_session, save_session
from opt_desktop.session.analyses import Analysis
from opt_desktop.session.export import export_html, export_json, export_markdown


@pytest.fixture(scope="module")
def analysed(engine, tmp_path_factory):
    """A run of each family with its lens table and two head-importance results, saved."""
    trace = generate(engine, GenerationRequest(
        prompt="The cat sat on the", settings=GenerationSettings(max_new_tokens=5),
        head_mask=(HeadScale(layer=1, head=0, scale=0.5),), hidden_positions=(2,)))
    request = trace.lens_request()
    table = engine.call(lambda loaded: lens_table(loaded, top_k=4, **request)).result()
    trace.set_lens_table(table)
    for scale in (0.0, 2.0):
        trace.add_head_importance(engine.head_importance(trace.token_ids, trace.n_prompt, scale,
                                                         base_mask=trace.started.head_mask,
                                                         hidden=trace.started.hidden_positions).result())
    path = tmp_path_factory.mktemp("analysed") / "analysed.optsession"
    save_session(Session([trace]), path)
    return trace, table, path


def test_the_lens_and_head_importance_reopen_without_a_model(analysed):
    trace, table, path = analysed
    opened = load_session(path).runs[0]  # no engine is asked: the file alone
    got = opened.lens_table()
    for name in ("top_ids", "top_probs", "target_logprob", "target_rank"):
        np.testing.assert_array_equal(getattr(got, name), getattr(table, name))
    assert got.pieces == table.pieces
    for pos in range(trace.length):
        a, b = trace.lens_at(pos), opened.lens_at(pos)
        assert a.top_pieces == b.top_pieces and a.target_id == b.target_id
        np.testing.assert_array_equal(a.target_logprob, b.target_logprob)
    before, after = trace.head_importances(), opened.head_importances()
    assert [r.scale for r in after] == [0.0, 2.0]
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x.delta, y.delta)
        assert (x.baseline_logprob, x.completed, x.n_prompt) == (y.baseline_logprob, y.completed, y.n_prompt)


def test_head_importance_of_the_same_scale_is_replaced(analysed):
    trace, _, _ = analysed
    copy = load_session(analysed[2]).runs[0]
    L, H = copy.n_layers, copy.n_heads
    newer = HeadImportance(delta=np.ones((L, H), np.float32), baseline_logprob=-3.0, completed=True, scale=0.0,
                           n_prompt=copy.n_prompt)
    copy.add_head_importance(newer)
    assert [r.scale for r in copy.head_importances()] == [2.0, 0.0]
    assert (copy.head_importances()[1].delta == 1).all()
    with pytest.raises(ValueError, match="layers of"):
        copy.add_head_importance(HeadImportance(np.ones((L + 1, H), np.float32), 0.0, True, 0.0, copy.n_prompt))


def test_the_file_documents_its_analyses(analysed):
    trace, table, path = analysed
    with zipfile.ZipFile(path) as z:
        doc = json.loads(z.read("session.json"))
    assert doc["schema_version"] == 3
    kinds = [a["kind"] for a in doc["runs"][0]["analyses"]]
    assert kinds == ["logit_lens", "head_importance", "head_importance"]
    lens = doc["runs"][0]["analyses"][0]
    L1, T = trace.n_layers + 1, trace.length
    assert lens["params"] == {"top_k": 4}
    assert lens["arrays"] == {"top_ids": {"dtype": "int64", "shape": [L1, T, 4]},
                              "top_probs": {"dtype": "float32", "shape": [L1, T, 4]},
                              "target_logprob": {"dtype": "float32", "shape": [L1, T]},
                              "target_rank": {"dtype": "int64", "shape": [L1, T]}}
    assert set(map(int, lens["pieces"])) == set(np.unique(table.top_ids).tolist())
    imp = doc["runs"][0]["analyses"][1]
    assert imp["params"]["scale"] == 0.0 and imp["params"]["n_prompt"] == trace.n_prompt
    assert imp["arrays"] == {"delta": {"dtype": "float32", "shape": [trace.n_layers, trace.n_heads]}}


def test_exports_show_what_is_kept(analysed):
    session = load_session(analysed[2])
    page = export_html(session)
    assert "<h3>Logit lens</h3>" in page and page.count("<h3>Head importance") == 2
    assert "<th>embed</th>" in page and f"<th>{session.runs[0].n_layers - 1}</th>" in page
    md = export_markdown(session)
    assert "Logit lens at position" in md and "head importance ×0" in md
    doc = json.loads(export_json(session))
    data = doc["runs"][0]["analyses"][0]["data"]
    assert np.array_equal(np.array(data["top_ids"]), session.runs[0].lens_table().top_ids)


def test_a_kind_this_version_does_not_read_round_trips_unchanged(analysed, tmp_path):
    """A kind added by a later version needs no new schema: it is one more entry, kept as it was."""
    session = load_session(analysed[2])
    run = session.runs[0]
    scores = np.linspace(-1, 1, run.length).astype(np.float32)
    run.analyses.append(Analysis(kind="saliency_map", params={"method": "ig", "steps": 32, "target_position": 5},
                                 arrays={"scores": scores}, pieces={int(run.token_ids[1]): run.pieces[1]}))
    path = tmp_path / "attributed.optsession"
    save_session(session, path)
    again = load_session(path).runs[0]
    kept = again.analyses[-1]
    assert kept.kind == "saliency_map" and kept.params == {"method": "ig", "steps": 32, "target_position": 5}
    np.testing.assert_array_equal(kept.arrays["scores"], scores)
    assert kept.pieces == {int(run.token_ids[1]): run.pieces[1]}


def _edit(path, tmp_path, change) -> str:
    members = mutants.members_of(path.read_bytes())
    doc = json.loads(members["session.json"])
    change(doc["runs"][0]["analyses"])
    members["session.json"] = json.dumps(doc).encode()
    bad = tmp_path / "bad.optsession"
    bad.write_bytes(mutants.make_zip(members))
    with pytest.raises(SessionFileError) as err:
        load_session(bad)
    return str(err.value)


def test_analyses_that_do_not_fit_their_run_are_refused(analysed, tmp_path):
    path = analysed[2]
    assert "analyses.0 (logit_lens): its top_k is 500" in _edit(path, tmp_path, lambda a: a[0]["params"].update(top_k=500))
    assert "its array top_ids is int64" in _edit(
        path, tmp_path, lambda a: a[0]["arrays"]["top_ids"].update(shape=[1, 1, 4]))
    assert "its scale is 3.0" in _edit(path, tmp_path, lambda a: a[1]["params"].update(scale=3.0))
    assert "its n_prompt is 1" in _edit(path, tmp_path, lambda a: a[1]["params"].update(n_prompt=1))
    assert "runs.0.analyses.0.kind" in _edit(path, tmp_path, lambda a: a[0].update(kind="Bad Kind!"))
    assert "nested more than 4 levels" in _edit(
        path, tmp_path, lambda a: a[0]["params"].update(x=[[[[[1]]]]]))
    assert "the array analyses.3.scores is missing" in _edit(path, tmp_path, lambda a: a.append(
        {"kind": "saliency_map", "params": {}, "arrays": {"scores": {"dtype": "float32", "shape": [3]}}}))
    assert "outside the vocabulary" in _edit(path, tmp_path, lambda a: a[0]["pieces"].update({"999999": "x"}))


def test_schema_2_files_open_with_no_analyses(analysed, tmp_path):
    members = mutants.members_of(analysed[2].read_bytes())
    doc = json.loads(members["session.json"])
    doc["schema_version"] = 2
    for run in doc["runs"]:
        del run["analyses"]
    header, data = mutants.split_safetensors(members["arrays.safetensors"])
    keep = {k: v for k, v in header.items() if ".analyses." not in k}
    arrays = {}
    from safetensors.numpy import load

    full = load(members["arrays.safetensors"])
    arrays = {k: v for k, v in full.items() if ".analyses." not in k}
    from safetensors.numpy import save

    members = {"session.json": json.dumps(doc).encode(), "arrays.safetensors": save(arrays)}
    old = tmp_path / "old.optsession"
    old.write_bytes(mutants.make_zip(members))
    run = load_session(old).runs[0]
    assert run.analyses == [] and run.lens_table() is None and run.head_importances() == []
    assert keep  # the edited file kept the run's own arrays
