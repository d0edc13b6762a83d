"""The CLI's --threads: nonsense is refused in one line; a number is what the engine decodes with."""

import re

from test_cli import cli


def test_threads_nonsense_is_one_line():
    for value, shown in (("0", "0"), ("abc", "'abc'"), ("-2", "'-2'"), ("2.5", "'2.5'")):
        out = cli("generate", "--model", "demo", "--prompt", "x", "--threads", value)
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr.strip() == f"error: threads must be 'auto' or a whole number from 1 to 1024, not {shown}"


def test_a_fixed_thread_count_is_what_the_engine_decodes_with():
    out = cli("-v", "generate", "--model", "demo", "--prompt", "Hello", "--max-new-tokens", "6", "--threads", "1")
    assert out.returncode == 0, out.stderr
    assert re.search(r"Decoded with 1 thread for \d+ steps? \(1\)$", out.stderr, re.M), out.stderr
    out = cli("-v", "info", "--model", "demo", "--threads", "auto")
    assert out.returncode == 0, out.stderr


def test_the_option_is_listed_with_the_model_options():
    for command in ("generate", "attribute", "patch", "info"):
        assert "--threads auto|N" in cli(command, "--help").stdout
