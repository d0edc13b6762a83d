"""Exports: token text stays text (HTML), survives CSV quoting, and every format carries the run."""

import base64
import csv
import dataclasses
import io
import json
import math
import re

import pytest
from PIL import Image

from session_helpers import record, trace_from
from opt_desktop.engine import GenerationRequest, GenerationSettings, TokenGenerated
from opt_desktop.session import (
    EXPORT_FORMATS,
    ExportError,
    Session,
    SessionFileError,
    export_csv,
    export_html,
    export_json,
    export_markdown,
    write_export,
)
from opt_desktop.session.export import read_csv_text_cell

NASTY = ['<script>alert("x")</script>', 'a,"b"\nc', "```", '=HYPERLINK("http://x")', "'@sum"]
PROMPT = "Tom said, \"hi\" <b> =1+2 -3 @x"


@pytest.fixture(scope="module")
def session(pre_engine):
    """A real run whose first generated tokens read like markup, CSV separators and a code fence."""
    events = record(pre_engine, GenerationRequest(prompt=PROMPT, settings=GenerationSettings(
        max_new_tokens=5, do_sample=True, temperature=0.7, seed=4)))
    tokens = iter(NASTY)
    edited = []
    for e in events:
        if isinstance(e, TokenGenerated) and (text := next(tokens, None)) is not None:
            e = dataclasses.replace(e, piece=text, text=text, top_pieces=(text,) + e.top_pieces[1:])
        edited.append(e)
    finished = edited[-1]
    edited[-1] = dataclasses.replace(finished, text="".join(e.text for e in edited if isinstance(e, TokenGenerated)))
    trace = trace_from(edited)
    assert trace.text.startswith("".join(NASTY))
    second = trace_from(record(pre_engine, GenerationRequest(prompt="Second", settings=GenerationSettings(max_new_tokens=2))))
    return Session([trace, second])


def test_html_escapes_token_text(session):
    page = export_html(session)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "<b>" not in page and "&lt;" in page  # the prompt's "<b>" is text too
    assert page.count("<section") == 2
    # Each token is a span titled with its probability.
    t = session.runs[0]
    pos = t.n_prompt + 1
    p = math.exp(float(t.logprob[pos]))
    assert f"p = {p:.4f}" in page


def test_html_is_self_contained_with_heatmaps(session):
    page = export_html(session, run=0)
    assert page.count("<section") == 1
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # nothing loaded from elsewhere
    images = [Image.open(io.BytesIO(base64.b64decode(uri)))
              for uri in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]
    t = session.runs[0]
    sizes = {img.size for img in images}
    wide = max(1, min(24, 960 // t.length))
    assert (t.length * wide, (t.n_layers + 1) * 16) in sizes  # hidden-state norm, L+1 x T
    assert (t.n_heads * 24, t.n_layers * 24) in sizes  # attention entropy, L x H
    assert (t.length * wide, 20) in sizes  # probability and entropy strips
    assert t.started.model.source in page and "temperature" in page


def test_csv_round_trip(session):
    rows = list(csv.reader(io.StringIO(export_csv(session))))
    header, body = rows[0], rows[1:]
    t, second = session.runs
    assert len(body) == t.length + second.length
    assert header[:9] == ["run", "position", "part", "token_id", "text", "prob", "logprob", "rank", "entropy"]
    col = {name: i for i, name in enumerate(header)}
    for row in body[: t.length]:
        pos = int(row[col["position"]])
        assert row[col["run"]] == "1" and int(row[col["token_id"]]) == t.token_ids[pos]
        assert read_csv_text_cell(row[col["text"]]) == t.pieces[pos]
        assert row[col["part"]] == ("prompt" if pos < t.n_prompt else "output")
        if pos == 0:
            assert row[col["prob"]] == row[col["logprob"]] == row[col["rank"]] == ""
            continue
        assert float(row[col["logprob"]]) == pytest.approx(float(t.logprob[pos]))
        assert float(row[col["prob"]]) == pytest.approx(math.exp(float(t.logprob[pos])))
        assert int(row[col["rank"]]) == int(t.rank[pos])
        assert float(row[col["entropy"]]) == pytest.approx(float(t.entropy[pos]))
        assert int(row[col["top1_id"]]) == int(t.top_ids[pos, 0])
        assert float(row[col["top1_prob"]]) == pytest.approx(float(t.top_probs[pos, 0]))
    generated = [read_csv_text_cell(row[col["text"]]) for row in body[t.n_prompt: t.n_prompt + len(NASTY)]]
    assert generated == NASTY
    # Alternatives are named by id (one text per id), nasty texts included, and read back intact.
    known = t.known_pieces()
    assert any(text in known.values() for text in NASTY)
    for row in body[: t.length]:
        if row[col["top1_id"]]:
            assert read_csv_text_cell(row[col["top1_text"]]) == known.get(int(row[col["top1_id"]]), "")
    only_second = list(csv.reader(io.StringIO(export_csv(session, run=1))))
    assert len(only_second) == 1 + second.length and {r[0] for r in only_second[1:]} == {"2"}


def test_csv_cells_cannot_start_a_formula(session):
    """Issue 13: prompt tokens such as '=' and '+' reached the text and top*_text columns as they were."""
    rows = list(csv.reader(io.StringIO(export_csv(session))))
    header, body = rows[0], rows[1:]
    text_columns = [i for i, name in enumerate(header) if name == "text" or name.endswith("_text")]
    cells = [row[i] for row in body for i in text_columns]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    t = session.runs[0]
    risky = [p for p in t.pieces if p.startswith(("=", "+", "-", "@", "'"))]
    assert len(risky) >= 3, t.pieces  # the prompt's own "=", "+", "-"-like tokens and the generated ones
    assert '\'=HYPERLINK("http://x")' in cells and "''@sum" in cells
    # Numbers stay numbers: a log-probability is written as it is, minus sign first.
    assert any(row[header.index("logprob")].startswith("-") for row in body[1:])


def test_markdown_has_prompt_settings_and_output(session):
    text = export_markdown(session, run=0)
    t = session.runs[0]
    assert PROMPT in text and "## Run 1" in text and "## Run 2" not in text
    assert "| temperature | 0.7 |" in text and "| seed | 4 |" in text and "| do_sample | true |" in text
    assert t.text in text
    # The output holds a ``` of its own: the fence around it is longer, so it cannot end early.
    assert "\n````text\n" + t.text + "\n````" in text
    assert "finished: length" in text


def test_json_parses(session):
    doc = json.loads(export_json(session))
    assert doc["format"] == "opt-desktop-session" and len(doc["runs"]) == 2
    run = doc["runs"][0]
    assert run["prompt"] == PROMPT and run["text"] == session.runs[0].text
    assert [tok["text"] for tok in run["tokens"][:len(NASTY)]] == NASTY
    assert len(json.loads(export_json(session, run=1))["runs"]) == 1


def test_write_export_every_format(session, tmp_path):
    for fmt in EXPORT_FORMATS:
        path = tmp_path / f"out.{fmt}"
        write_export(session, fmt, path)
        assert path.stat().st_size > 0
    assert (tmp_path / "out.csv").read_text(encoding="utf-8-sig").startswith("run,position,")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"out.{fmt}" for fmt in EXPORT_FORMATS)


def test_export_errors_are_one_line(session, tmp_path):
    with pytest.raises(ExportError, match=r"^There is no run 3 to export: the session has 2 runs\.$"):
        export_markdown(session, run=2)
    with pytest.raises(ExportError, match="Unknown export format 'pdf'"):
        write_export(session, "pdf", tmp_path / "x.pdf")
    target = tmp_path / "missing" / "x.md"
    with pytest.raises(SessionFileError) as err:
        write_export(session, "md", target)
    assert str(err.value) == f"Could not write {target}: No such file or directory"


def test_the_documented_csv_reader_gets_every_token_back(session, tmp_path):
    """docs/session-format.md's recipe for reading a CSV export back, run as written."""
    import pathlib
    import re as _re

    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "session-format.md").read_text(encoding="utf-8")
    snippet = _re.findall(r"```python\n(.*?)```", doc, _re.S)[1]
    assert "tokens.csv" in snippet
    write_export(session, "csv", tmp_path / "tokens.csv")
    scope: dict = {}
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(snippet, scope)
    finally:
        os.chdir(cwd)
    assert scope["texts"] == session.runs[0].pieces + session.runs[1].pieces
