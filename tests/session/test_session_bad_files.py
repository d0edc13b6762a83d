"""Every kind of bad session file gets one clear line naming the file and the problem, and nothing else."""

import io
import json
import struct
import zipfile

import numpy as np
import pytest
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays

from session_helpers import generate
from opt_desktop.engine import GenerationRequest, GenerationSettings
from opt_desktop.session import Session, SessionFileError, load_session, save_session
from opt_desktop.session import limits


@pytest.fixture(scope="module")
def good(pre_engine, tmp_path_factory):
    """(session.json as a dict, the arrays, the file's bytes) of a valid one-run session."""
    trace = generate(pre_engine, GenerationRequest(prompt="A good file", settings=GenerationSettings(max_new_tokens=4)))
    path = tmp_path_factory.mktemp("good") / "good.optsession"
    save_session(Session([trace]), path)
    with zipfile.ZipFile(path) as z:
        doc = json.loads(z.read("session.json"))
        arrays = load_arrays(z.read("arrays.safetensors"))
    return doc, arrays, path.read_bytes()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name), data)
    return buffer.getvalue()


def _session(doc=None, arrays=None, good=None, extra=None) -> bytes:
    g_doc, g_arrays, _ = good
    members = {"session.json": json.dumps(g_doc if doc is None else doc).encode(),
               "arrays.safetensors": save_arrays(g_arrays if arrays is None else arrays)}
    members.update(extra or {})
    return _zip({k: v for k, v in members.items() if v is not None})


def _refused(tmp_path, data: bytes, *needles: str) -> str:
    path = tmp_path / "bad.optsession"
    path.write_bytes(data)
    with pytest.raises(SessionFileError) as err:
        load_session(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    for needle in needles:
        assert needle in message, message
    assert path.read_bytes() == data  # reading never changes the file
    return message


def test_the_good_file_opens(good, tmp_path):
    path = tmp_path / "ok.optsession"
    path.write_bytes(_session(good=good))
    assert len(load_session(path).runs) == 1


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(SessionFileError, match="no such file"):
        load_session(tmp_path / "absent.optsession")
    with pytest.raises(SessionFileError, match="it is a folder"):
        load_session(tmp_path)


def test_not_a_zip(tmp_path):
    assert _refused(tmp_path, b"hello, I am text") == (
        f"Cannot open {tmp_path / 'bad.optsession'}: it is not an OPT Desktop session (not a zip archive)")
    _refused(tmp_path, b"", "not a zip archive")


def test_truncated_zip(good, tmp_path):
    data = good[2]
    _refused(tmp_path, data[: len(data) // 2], "damaged")
    _refused(tmp_path, data[:-10], "damaged")


def test_corrupted_member_data(good, tmp_path):
    data = bytearray(good[2])
    start = data.index(b"session.json") + len("session.json") + 20
    data[start: start + 40] = bytes(40)  # inside the compressed JSON
    _refused(tmp_path, bytes(data), "damaged")


def test_session_json_missing_or_not_json(good, tmp_path):
    _refused(tmp_path, _session(good=good, extra={"session.json": None}), "has no session.json")
    _refused(tmp_path, _session(good=good, extra={"session.json": b"{not json"}), "session.json is not valid JSON")
    _refused(tmp_path, _session(good=good, extra={"session.json": b"\xff\xfe\x00"}), "not UTF-8")


def test_json_of_the_wrong_shape(good, tmp_path):
    doc = good[0]
    _refused(tmp_path, _session([1, 2], good=good), "session.json is not a JSON object")
    _refused(tmp_path, _session({**doc, "format": "something-else"}, good=good),
             "not an OPT Desktop session", "'something-else'")
    _refused(tmp_path, _session({**doc, "schema_version": "two"}, good=good), "no valid schema_version")
    _refused(tmp_path, _session({**doc, "runs": "many"}, good=good), "session.json runs: Input should be a valid list")
    run = {**doc["runs"][0]}
    run["tokens"] = [{**run["tokens"][0], "logprob": "high"}] + run["tokens"][1:]
    _refused(tmp_path, _session({**doc, "runs": [run]}, good=good), "session.json runs.0.tokens.0.logprob")
    run = {**doc["runs"][0]}
    del run["seed"]
    _refused(tmp_path, _session({**doc, "runs": [run]}, good=good), "runs.0.seed: Field required")


def test_newer_schema_names_what_is_needed(good, tmp_path):
    doc = {**good[0], "schema_version": 4, "versions": {"app": "9.1.0", "torch": None, "transformers": None}}
    message = _refused(tmp_path, _session(doc, good=good))
    assert "written by OPT Desktop 9.1.0 (session schema 4)" in message
    assert "reads schema 3 and older: update OPT Desktop to open it" in message


def test_arrays_missing(good, tmp_path):
    _refused(tmp_path, _session(good=good, extra={"arrays.safetensors": None}), "has no arrays.safetensors")
    arrays = {k: v for k, v in good[1].items() if k != "runs.0.hidden_norm"}
    _refused(tmp_path, _session(arrays=arrays, good=good), "run 1: the array hidden_norm is missing")
    arrays = {k: v for k, v in good[1].items() if k != "runs.0.residual_mask"}
    _refused(tmp_path, _session(arrays=arrays, good=good), "residual and residual_mask must be stored together")
    _refused(tmp_path, _session(good=good, extra={"arrays.safetensors": b"\x10\x00\x00\x00junk"}),
             "arrays.safetensors is damaged")


def test_arrays_of_the_wrong_shape_or_dtype(good, tmp_path):
    arrays = good[1]
    T = arrays["runs.0.logprob"].shape[0]
    longer = {**arrays, "runs.0.logprob": np.zeros(T + 1, np.float32)}
    _refused(tmp_path, _session(arrays=longer, good=good),
             f"the array logprob is float32 ({T + 1},), expected float32 ({T},)")
    wider = {**arrays, "runs.0.logprob": arrays["runs.0.logprob"].astype(np.float64)}
    _refused(tmp_path, _session(arrays=wider, good=good), "the array logprob is float64")
    flat = {**arrays, "runs.0.attn_sink": arrays["runs.0.attn_sink"].reshape(-1)}
    _refused(tmp_path, _session(arrays=flat, good=good), "the array attn_sink is float32")


def test_arrays_inconsistent_with_the_token_count(good, tmp_path):
    doc = good[0]
    run = {**doc["runs"][0], "tokens": doc["runs"][0]["tokens"][:-1]}
    run["finished"] = {**run["finished"], "n_tokens": len(run["tokens"])}
    T = len(good[1]["runs.0.token_ids"])
    # The arrays are sized from session.json: one token fewer there makes every array one too long.
    _refused(tmp_path, _session({**doc, "runs": [run]}, good=good),
             f"run 1: the array token_ids is int64 ({T},), expected int64 ({T - 1},)")
    run = {**doc["runs"][0]}
    run["finished"] = {**run["finished"], "n_tokens": 99}
    _refused(tmp_path, _session({**doc, "runs": [run]}, good=good), "finished.n_tokens is 99")
    ids = good[1]["runs.0.token_ids"].copy()
    ids[-1] += 1
    _refused(tmp_path, _session(arrays={**good[1], "runs.0.token_ids": ids}, good=good), "differ")
    run = {**doc["runs"][0], "parent": 0}
    _refused(tmp_path, _session({**doc, "runs": [run]}, good=good), "can only fork from an earlier run")


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil", "a/../../evil", "C:/evil", "..\\evil"])
def test_names_that_escape_the_folder(good, tmp_path, name):
    _refused(tmp_path, _session(good=good, extra={name: b"x"}), repr(name), "points outside its folder")


def test_junk_appended(good, tmp_path):
    """Gigabytes of junk after the archive (a sparse file, so the test stays cheap)."""
    path = tmp_path / "bad.optsession"
    with open(path, "wb") as f:
        f.write(good[2])
        f.truncate(len(good[2]) + (3 << 30))
    with pytest.raises(SessionFileError) as err:
        load_session(path)
    assert str(err.value).startswith(f"Cannot open {path}: the archive is damaged")


def test_junk_before_the_archive(good, tmp_path):
    """zipfile reads an archive after a prefix; a file far larger than its contents is refused."""
    path = tmp_path / "bad.optsession"
    with open(path, "wb") as f:
        f.seek(2 << 30)
        f.write(good[2])
    with pytest.raises(SessionFileError) as err:
        load_session(path)
    assert "its contents account for only" in str(err.value) and str(path) in str(err.value)


def _declare_size(data: bytes, member: str, size: int) -> bytes:
    """Forge the uncompressed size a member declares in the central directory."""
    data = bytearray(data)
    entry = data.index(b"PK\x01\x02")  # the first central directory entry
    while True:
        name_len = struct.unpack_from("<H", data, entry + 28)[0]
        if data[entry + 46: entry + 46 + name_len].decode() == member:
            struct.pack_into("<I", data, entry + 24, size)
            return bytes(data)
        entry = data.index(b"PK\x01\x02", entry + 4)


def test_zip_bomb_guard(good, tmp_path, monkeypatch):
    bomb = _declare_size(good[2], "arrays.safetensors", 0xFFFFFF00)
    _refused(tmp_path, bomb, "'arrays.safetensors' claims to expand", "zip bomb")
    monkeypatch.setattr(limits, "MAX_JSON_BYTES", 1000)
    _refused(tmp_path, good[2], "session.json claims", "more than the limit of 1,000")


def test_other_compression_methods_are_refused(good, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_BZIP2) as z:
        z.writestr("session.json", json.dumps(good[0]))
        z.writestr("arrays.safetensors", save_arrays(good[1]))
    _refused(tmp_path, buffer.getvalue(), "unsupported compression method")
