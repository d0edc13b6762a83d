"""The headless front end, run as a user would run it."""

import csv
import io
import json
import os
import signal
import subprocess
import sys

CLI = [sys.executable, "-m", "opt_desktop.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


def cli(*args, timeout=240):
    return subprocess.run(CLI + list(args), env=ENV, capture_output=True, text=True, timeout=timeout)


def test_generate_streams_text_and_summary():
    out = cli("generate", "--model", "demo", "--prompt", "Hello", "--max-new-tokens", "12", "--sample", "--seed", "5")
    assert out.returncode == 0, out.stderr
    summary = out.stderr.strip().splitlines()[-1]
    assert summary.startswith("12 tokens, ") and "tokens/s" in summary and summary.endswith("finished: length")
    again = cli("generate", "--model", "demo", "--prompt", "Hello", "--max-new-tokens", "12", "--sample", "--seed", "5")
    assert again.stdout == out.stdout and out.stdout.strip()


class _OneScreen:
    """stdout and stderr shown in one place, stdout held back until it is flushed (as it is when it
    is a pipe or a file): what a person sees of both, in the order it reaches them."""

    def __init__(self):
        self.shown, self._held = [], []
        screen = self

        class Out(io.StringIO):
            def write(self, text):
                screen._held.append(text)
                return len(text)

            def flush(self):
                screen.shown += screen._held
                screen._held.clear()

        class Err(io.StringIO):
            def write(self, text):
                screen.shown.append(text)
                return len(text)

        self.out, self.err = Out(), Err()

    def text(self) -> str:
        return "".join(self.shown + self._held)


def test_the_summary_starts_on_a_line_of_its_own(monkeypatch):
    """Issue 23 (13): the text's last newline was still held back when the summary was written, so
    the two ran together: "Return the64 tokens, 30.9 tokens/s"."""
    from opt_desktop import cli as cli_module

    screen = _OneScreen()
    monkeypatch.setattr(sys, "stdout", screen.out)
    monkeypatch.setattr(sys, "stderr", screen.err)
    assert cli_module.main(["generate", "--model", "demo", "--prompt", "Return the", "--max-new-tokens", "12"]) == 0
    assert any(line.startswith("12 tokens, ") for line in screen.text().splitlines()), screen.text()


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """Issue 23 (7): `generate ... | head -c 20` printed "error: ... Broken pipe", returned 1 and
    logged a traceback; a Unix tool ends quietly (and a shell reports 141, killed by SIGPIPE)."""
    from opt_desktop.logs import log_file

    proc = subprocess.Popen(CLI + ["generate", "--model", "demo", "--prompt", "The", "--max-new-tokens", "200"],
                            env={**ENV, "OPT_DESKTOP_HOME": os.environ["OPT_DESKTOP_HOME"]},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert len(proc.stdout.read(20)) == 20
    proc.stdout.close()  # what `head -c 20` does once it has its 20 bytes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""
    logged = log_file().read_text(encoding="utf-8") if log_file().is_file() else ""
    assert "Traceback" not in logged and "Broken pipe" not in logged


def test_json_events():
    out = cli("generate", "--model", "demo", "--prompt", "Hi there", "--max-new-tokens", "3", "--json")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    # The prompt's statistics follow the first token (they are not on the way to it).
    assert [e["event"] for e in events] == ["Started", "TokenGenerated", "PromptScored"] + ["TokenGenerated"] * 2 + [
        "Finished"]
    tok = events[3]
    assert {"token_id", "text", "logprob", "rank", "entropy", "top_ids", "top_probs", "elapsed_s"} <= set(tok)
    assert len(tok["top_ids"]) == 10 and tok["fed"]["hidden"]["norm"]
    assert events[-1]["reason"] == "length" and events[-1]["n_tokens"] == 3


def test_config_file_and_flags(tmp_path):
    cfg = tmp_path / "generation_config.json"
    cfg.write_text(json.dumps({"do_sample": True, "temperature": 0.8, "max_new_tokens": 4, "seed": 7}))
    out = cli("generate", "--model", "demo", "--prompt", "x", "--config", str(cfg), "--json")
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events[0]["settings"]["temperature"] == 0.8 and events[0]["seed"] == 7
    assert events[-1]["n_tokens"] == 4


def test_bad_settings_are_one_line():
    out = cli("generate", "--model", "demo", "--prompt", "x", "--sample", "--temperature", "0")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip() == ("error: temperature must be greater than 0 when sampling "
                                  "(use greedy decoding for deterministic output)")
    out = cli("generate", "--model", "demo", "--prompt", "x", "--top-p", "1.5")
    assert out.stderr.strip() == "error: top_p: must be in (0, 1], got 1.5"


def test_missing_model_is_one_line(tmp_path):
    out = cli("info", "--model", str(tmp_path / "missing"))
    assert out.returncode == 1 and out.stderr.strip() == f"error: No such folder: {tmp_path / 'missing'}"


def test_prompt_too_long_is_one_line():
    out = cli("generate", "--model", "demo", "--prompt", "word " * 600)
    assert out.returncode == 1
    assert "reads at most 256" in out.stderr and "Traceback" not in out.stderr


def test_info():
    out = cli("info", "--model", "demo")
    assert out.returncode == 0
    assert "trained on Python's documentation (not OPT weights)" in out.stdout
    assert "layers: 4" in out.stdout and "parameters:" in out.stdout


def test_ctrl_c_stops_with_partial_result():
    proc = subprocess.Popen(CLI + ["generate", "--model", "demo", "--prompt", "Hi", "--max-new-tokens", "250",
                                   "--json", "--keep-attention-rows"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    while sum('"TokenGenerated"' in line for line in lines) < 3:  # wait until tokens are flowing
        lines.append(proc.stdout.readline())
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    events = [json.loads(line) for line in lines + rest.splitlines() if line.strip()]
    assert proc.returncode == 0, err
    assert events[-1]["event"] == "Finished" and events[-1]["reason"] == "cancelled"
    assert 3 <= events[-1]["n_tokens"] < 250
    assert "finished: cancelled" in err


def test_save_show_and_export_a_session(tmp_path):
    path = tmp_path / "run.optsession"
    out = cli("generate", "--model", "demo", "--prompt", 'Say "hi", then stop', "--max-new-tokens", "5", "--sample",
              "--seed", "9", "--temperature", "0.8", "--mask-heads", "1:2,3:*=0.5", "--hide-positions", "1-2",
              "--save", str(path))
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == f"saved to {path}"

    from opt_desktop.session import load_session

    trace = load_session(path).runs[0]
    assert trace.n_generated == 5 and trace.started.seed == 9 and trace.text + "\n" == out.stdout
    assert trace.started.head_mask == ((1, 2, 0.0),) + tuple((3, h, 0.5) for h in range(6))  # the demo's 6 heads
    assert trace.started.hidden_positions == (1, 2)

    show = cli("show", str(path))
    assert show.returncode == 0, show.stderr
    lines = [line.split(":", 1) for line in show.stdout.splitlines()[3:]]
    fields = {key.strip(): value.strip() for key, value in lines}
    assert show.stdout.startswith(f"{path}: 1 run\n\nRun 1\n")
    assert fields["model"].startswith("demo") and fields["prompt"] == "'Say \"hi\", then stop'"
    assert fields["settings"] == "max_new_tokens=5, do_sample=True, temperature=0.8"
    assert fields["seed"] == "9" and fields["prompt tokens"] == str(trace.n_prompt)
    assert fields["result"].startswith("5 tokens, ") and fields["result"].endswith("finished: length")
    assert fields["head mask"] == "1:2, 3:* ×0.5" and fields["hidden positions"] == "1, 2"
    # The file holds the lens of every position, computed before saving: it shows without a model.
    table = trace.lens_table()
    assert table is not None and table.top_ids.shape[:2] == (trace.n_layers + 1, trace.length)
    assert fields["logit lens"].startswith("every position, top 5 per row")
    assert trace.lens_at(trace.length - 2).target_id == trace.token_ids[-1]

    md = cli("export", str(path), "--format", "md")
    assert md.returncode == 0 and 'Say "hi", then stop' in md.stdout and trace.text in md.stdout
    csv_file = tmp_path / "tokens.csv"
    assert cli("export", str(path), "--format", "csv", "-o", str(csv_file), "--run", "1").returncode == 0
    with open(csv_file, encoding="utf-8-sig", newline="") as f:  # token text may hold line breaks
        assert len(list(csv.reader(f))) == 1 + trace.length
    doc = json.loads(cli("export", str(path), "--format", "json").stdout)
    assert [t["id"] for t in doc["runs"][0]["tokens"]] == trace.generated_ids
    html_file = tmp_path / "report.html"
    assert cli("export", str(path), "--format", "html", "-o", str(html_file)).returncode == 0
    page = html_file.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<h3>Logit lens</h3>" in page and "<th>embed</th>" in page
    assert "Logit lens at position" in md.stdout
    assert doc["runs"][0]["analyses"][0]["kind"] == "logit_lens" and doc["runs"][0]["analyses"][0]["data"]["top_ids"]

    bad_run = cli("export", str(path), "--format", "md", "--run", "2")
    assert bad_run.returncode == 1 and bad_run.stderr == "error: There is no run 2 to export: the session has 1 run.\n"


def test_a_bad_session_file_is_one_line(tmp_path):
    path = tmp_path / "broken.optsession"
    path.write_bytes(b"PK\x03\x04 cut short")
    for args in (("show", str(path)), ("export", str(path), "--format", "html")):
        out = cli(*args)
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr == (f"error: Cannot open {path}: the archive is damaged (its end is missing: the file was "
                              "cut short, or data was added after it)\n")


def test_dtype_choices_follow_the_engine():
    out = cli("generate", "--help")
    assert "{float32,bfloat16,float16,int8}" in out.stdout


def run_main(capsys, *args):
    """The CLI in this process (no interpreter to start): (exit code, stdout, stderr)."""
    from opt_desktop import cli as cli_module

    code = cli_module.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_save_to_a_place_that_cannot_be_written_fails_before_generating(tmp_path, capsys):
    """Issue 13: the run was generated first and then lost."""
    for target, why in ((tmp_path / "missing" / "x.optsession", f"the folder {tmp_path / 'missing'} does not exist"),
                        (tmp_path, "it is a folder")):
        code, out, err = run_main(capsys, "generate", "--model", "demo", "--prompt", "Hello", "--max-new-tokens", "3",
                                  "--save", str(target))
        assert code == 1 and out == ""  # nothing was generated
        assert err == f"error: Cannot save to {target}: {why}\n"


def test_nan_duplicate_heads_and_one_token(capsys):
    code, out, err = run_main(capsys, "generate", "--model", "demo", "--prompt", "x", "--temperature", "nan")
    assert code == 1 and err == "error: temperature: must be a finite number\n"
    code, out, err = run_main(capsys, "generate", "--model", "demo", "--prompt", "x", "--mask-heads", "1:0,1:0=0.5")
    assert code == 1 and err == "error: Head 1:0 is named twice ('1:0' and '1:0=0.5'): name each head once.\n"
    code, out, err = run_main(capsys, "generate", "--model", "demo", "--prompt", "Hello", "--max-new-tokens", "1")
    assert code == 0 and err.strip().splitlines()[-1].startswith("1 token, ")
