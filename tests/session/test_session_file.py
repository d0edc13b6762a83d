"""Saving a session and opening it again gives back the same runs, read by any method."""

import errno
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load as load_arrays

from session_helpers import assert_same_trace, generate, record, trace_from
from opt_desktop.engine import GenerationRequest, GenerationSettings, HeadMaskChanged, HeadScale, InspectSettings
from opt_desktop.engine.messages.events import ATTENTION_STATS, HIDDEN_STATS
from opt_desktop.session import SCHEMA_VERSION, SESSION_SUFFIX, Session, SessionFileError, load_session, save_session
from opt_desktop.session import file as session_file

DOC = Path(__file__).resolve().parents[2] / "docs" / "session-format.md"


@pytest.fixture(scope="module")
def session(engine):
    """Three runs of one model: sampled with an intervention, greedy with full attention rows, and a
    fork of the first with a head mask changed mid-run and no statistics at all."""
    sampled = generate(engine, GenerationRequest(
        prompt="Hello, my dog is cute and", settings=GenerationSettings(max_new_tokens=6, do_sample=True, seed=11),
        head_mask=(HeadScale(layer=1, head=2), HeadScale(layer=0, head=1, scale=0.5)), hidden_positions=(2,)))
    greedy = generate(engine, GenerationRequest(
        prompt="The capital of France", settings=GenerationSettings(max_new_tokens=5),
        inspect=InspectSettings(keep_attention_rows=True, top_alternatives=4)))
    events = record(engine, GenerationRequest(
        prompt_ids=tuple(sampled.token_ids[:8]), prompt="forked",
        settings=GenerationSettings(max_new_tokens=4, stop_strings=("\n",)),
        inspect=InspectSettings(hidden_stats=False, attention_stats=False, keep_residuals=False)))
    # A mask change as the engine reports one during a run (the GUI sets it while tokens stream).
    events.insert(4, HeadMaskChanged(index=2, head_mask=((0, 0, 0.0),)))
    fork = trace_from(events)
    fork.parent, fork.fork_position, fork.label = 0, 7, "what if"
    return Session([sampled, greedy, fork])


def test_round_trip_every_field_and_array(session, tmp_path):
    path = tmp_path / f"runs{SESSION_SUFFIX}"
    save_session(session, path)
    opened = load_session(path)
    assert len(opened.runs) == 3
    for before, after in zip(session.runs, opened.runs):
        assert_same_trace(before, after)
    assert opened.model == session.model
    assert opened.children(0) == [2] and opened.children(1) == []
    assert opened.runs[0].started.head_mask == ((0, 1, 0.5), (1, 2, 0.0))
    assert opened.runs[0].started.hidden_positions == (2,)
    assert opened.runs[1].has_attention_rows and opened.runs[0].residual_rows(3) is not None
    assert opened.runs[2].mask_changes == [HeadMaskChanged(index=2, head_mask=((0, 0, 0.0),))]
    assert np.isnan(opened.runs[2].hidden("norm")).all()
    # Saving what was opened gives the same content again.
    again = tmp_path / "again.optsession"
    save_session(opened, again)
    assert _arrays(path) == _arrays(again)


def _arrays(path):
    with zipfile.ZipFile(path) as z:
        arrays = load_arrays(z.read("arrays.safetensors"))
    return {k: (v.dtype, v.shape, v.tobytes()) for k, v in arrays.items()}


def test_file_layout(session, tmp_path):
    """What the format document promises, read with zipfile, json and safetensors alone."""
    path = tmp_path / "layout.optsession"
    save_session(session, path)
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["arrays.safetensors", "session.json"]
        doc = json.loads(z.read("session.json"))
        arrays = load_arrays(z.read("arrays.safetensors"))
    assert doc["format"] == "opt-desktop-session" and doc["schema_version"] == SCHEMA_VERSION == 3
    assert set(doc["versions"]) == {"app", "torch", "transformers"} and doc["versions"]["transformers"]
    run = doc["runs"][0]
    trace = session.runs[0]
    info = trace.started.model
    assert run["model"]["source"] == info.source and "revision" in run["model"] and run["model"]["n_layers"] == info.n_layers
    assert run["seed"] == 11 and run["settings"]["do_sample"] is True and run["inspect"]["top_alternatives"] == 10
    assert run["head_mask"] == [[0, 1, 0.5], [1, 2, 0.0]] and run["hidden_positions"] == [2]
    assert run["parent"] is None and run["fork_position"] is None and run["mask_changes"] == []
    assert run["n_prompt"] == trace.n_prompt == len(run["prompt_ids"]) == len(run["prompt_pieces"])
    assert run["text"] == trace.text and run["finished"]["reason"] == trace.finished.reason
    assert run["finished"]["tokens_per_s"] == trace.finished.tokens_per_s
    assert len(run["tokens"]) == trace.n_generated
    tok = run["tokens"][2]
    pos = trace.n_prompt + 2
    assert tok["id"] == trace.token_ids[pos] and tok["text"] == trace.pieces[pos]
    assert tok["logprob"] == pytest.approx(float(trace.logprob[pos])) and tok["rank"] == int(trace.rank[pos])
    assert tok["entropy"] == pytest.approx(float(trace.entropy[pos]))
    assert [a["id"] for a in tok["top"]] == trace.top_ids[pos].tolist()
    assert tok["top"][0]["prob"] == pytest.approx(float(trace.top_probs[pos, 0]))
    assert doc["runs"][2]["parent"] == 0 and doc["runs"][2]["fork_position"] == 7
    assert doc["runs"][2]["mask_changes"] == [{"index": 2, "head_mask": [[0, 0, 0.0]]}]

    L, H, T = trace.n_layers, trace.n_heads, trace.length
    expected = {"token_ids": ((T,), "int64"), "logprob": ((T,), "float32"), "entropy": ((T,), "float32"),
                "rank": ((T,), "int64"), "top_ids": ((T, 10), "int64"), "top_probs": ((T, 10), "float32"),
                "residual": ((L + 1, T, info.hidden_size), "float16"), "residual_mask": ((T,), "bool")}
    expected.update({f"hidden_{n}": ((L + 1, T), "int64" if n == "argmax" else "float32") for n in HIDDEN_STATS})
    expected.update({f"attn_{n}": ((L, H, T), "float32") for n in ATTENTION_STATS})
    for name, (shape, dtype) in expected.items():
        a = arrays[f"runs.0.{name}"]
        assert (a.shape, str(a.dtype)) == (shape, dtype), name
    assert "runs.0.attention_rows" not in arrays
    rows = arrays["runs.1.attention_rows"]
    T1 = session.runs[1].length
    assert rows.shape == (L, H, T1, T1) and rows.dtype == np.float16
    assert np.isnan(rows[:, :, 0, 1:]).all() and np.isfinite(rows[:, :, 1, :2]).all()
    assert np.isnan(arrays["runs.0.hidden_norm"][:, -1]).all()  # the last token was never fed
    assert "runs.2.residual" not in arrays


def test_the_documented_snippet_reads_a_file(session, tmp_path):
    """The five lines in docs/session-format.md work, in a Python that never imports opt_desktop."""
    snippet = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)
    assert len(snippet.strip().splitlines()) == 5
    path = tmp_path / "run.optsession"
    save_session(session, path)
    out = subprocess.run([sys.executable, "-c", snippet + "\nimport sys; print('opt_desktop' in sys.modules)"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    shape = session.runs[0].hidden("norm").shape
    assert out.stdout == f"{session.runs[0].text} {shape}\nFalse\n"


def test_schema_1_file_opens_with_defaults(session, tmp_path):
    """A file from before interventions and forks: the missing fields take their neutral values."""
    path = tmp_path / "new.optsession"
    save_session(Session(session.runs[1:2]), path)
    with zipfile.ZipFile(path) as z:
        doc = json.loads(z.read("session.json"))
        blob = z.read("arrays.safetensors")
    doc["schema_version"] = 1
    for run in doc["runs"]:
        for key in ("head_mask", "hidden_positions", "mask_changes", "parent", "fork_position"):
            del run[key]
    old = tmp_path / "old.optsession"
    with zipfile.ZipFile(old, "w") as z:
        z.writestr("session.json", json.dumps(doc))
        z.writestr("arrays.safetensors", blob)
    opened = load_session(old)
    trace = opened.runs[0]
    assert trace.started.head_mask == () and trace.started.hidden_positions == ()
    assert trace.mask_changes == [] and trace.parent is None and trace.fork_position is None
    assert_same_trace(session.runs[1], trace)


def test_a_failed_write_leaves_the_old_file_intact(session, tmp_path, monkeypatch):
    path = tmp_path / "keep.optsession"
    save_session(Session(session.runs[:1]), path)
    before = path.read_bytes()

    def disk_full(f, members):
        f.write(b"PK\x03\x04" + b"x" * 5000)  # some of the archive made it to disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(session_file, "_write_members", disk_full)
    with pytest.raises(SessionFileError) as err:
        save_session(session, path)
    assert str(err.value) == f"Could not save {path}: No space left on device"
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.optsession"]
    assert len(load_session(path).runs) == 1

    fresh = tmp_path / "fresh.optsession"
    with pytest.raises(SessionFileError):
        save_session(session, fresh)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.optsession"]


def test_save_into_a_missing_folder_is_one_line(session, tmp_path):
    path = tmp_path / "nowhere" / "x.optsession"
    with pytest.raises(SessionFileError) as err:
        save_session(session, path)
    assert str(err.value) == f"Could not save {path}: No such file or directory"


def test_a_run_saved_while_running(pre_engine, tmp_path):
    """An autosave can happen mid-run: the partial run comes back as it was, unfinished."""
    events = record(pre_engine, GenerationRequest(prompt="Once upon", settings=GenerationSettings(max_new_tokens=6)))
    partial = trace_from(events[:-3])  # Finished and the last two tokens had not arrived yet
    assert partial.finished is None and partial.n_generated == 4
    path = tmp_path / "partial.optsession"
    save_session(Session([partial]), path)
    opened = load_session(path).runs[0]
    assert_same_trace(partial, opened)


def test_a_start_notice_is_kept_once(pre_engine, tmp_path):
    """The engine gives a start notice in Started and again as a Notice event: the run lists it once."""
    events = record(pre_engine, GenerationRequest(prompt="word " * 60, settings=GenerationSettings(max_new_tokens=100)))
    trace = trace_from(events)
    assert len(events[0].notices) == 1 and events[0].notices[0].startswith("Max new tokens lowered from 100")
    assert trace.notices == list(events[0].notices)
    path = tmp_path / "notice.optsession"
    save_session(Session([trace]), path)
    assert load_session(path).runs[0].notices == trace.notices


def test_the_model_document_has_every_field_of_model_info():
    """session.json's model is checked field by field (schema.ModelInfoDoc): a field added to the
    engine's ModelInfo must be added there too, or a reopened run would lose it."""
    import dataclasses as dc

    from opt_desktop.engine.messages.events import ModeAccuracy, ModelInfo
    from opt_desktop.session.schema import ModeAccuracyDoc, ModelInfoDoc

    assert set(ModelInfoDoc.model_fields) == {f.name for f in dc.fields(ModelInfo)}
    assert set(ModeAccuracyDoc.model_fields) == {f.name for f in dc.fields(ModeAccuracy)}
