"""opt-desktop-cli --engine ssh://…: every command prints on stdout what it prints with the engine
in this process; the connection's one extra line goes to stderr; a refused key is one error line."""

import pytest

from models import load_tokenizer, save_tiny_opt
from opt_desktop.cli import main
from ssh_server import engine_command


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_opt(tmp_path_factory.mktemp("opt-cli-ssh"), "post", load_tokenizer())


def ssh_args(server, key=None) -> list[str]:
    return ["--engine", f"ssh://{server.user}@127.0.0.1:{server.port}", "--remote-command", engine_command(),
            "--identity", str(key or server.user_key), *(a for o in server.options() for a in ("--ssh-option", o))]


def run_cli(capsys, args) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


COMMANDS = {
    "generate": ["generate", "--prompt", "Hello there", "--max-new-tokens", "6"],
    "generate --json": ["generate", "--prompt", "Hello there", "--max-new-tokens", "3", "--json"],
    "attribute": ["attribute", "--prompt", " the is the", "--method", "ig", "--steps", "4", "--alternative", " is"],
    # One token each in the real OPT tokenizer and in the fallback one alike.
    "patch": ["patch", "--clean", " the is the", "--corrupt", " the the the", "--target", " is"],
    "routes": ["routes", "--prompt", "The cat sat on the mat"],
    "info": ["info"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_prints_over_ssh_what_it_prints_here(ssh_server, checkpoint, capsys, command):
    args = COMMANDS[command] + ["--model", str(checkpoint), "--device", "cpu"]
    code_here, here, _ = run_cli(capsys, args)
    code_there, there, err = run_cli(capsys, ssh_args(ssh_server) + args)
    assert code_here == code_there == 0, err
    if command == "generate --json":  # the events, less what differs between any two runs (times, memory)
        here, there = (_stable(text) for text in (here, there))
    assert there == here and here
    assert "Engine 0.1.0 on " in err and "RAM" in err


def _stable(jsonl: str) -> list:
    import json

    out = []
    for line in jsonl.splitlines():
        event = json.loads(line)
        for key in ("elapsed_s", "time_to_first_token_s", "tokens_per_s", "memory_bytes", "inspect", "seed"):
            event.pop(key, None)
        for part in event.values():
            if isinstance(part, dict):
                part.pop("elapsed_s", None)
        out.append(event)
    return out


def test_a_refused_key_is_one_error_line(ssh_server, checkpoint, capsys):
    code, out, err = run_cli(capsys, ssh_args(ssh_server, key=ssh_server.stranger_key)
                             + ["generate", "--model", str(checkpoint), "--prompt", "Hi"])
    assert code == 1 and out == ""
    assert err.strip().splitlines()[-1].startswith("error: 127.0.0.1 refused the authentication (")
