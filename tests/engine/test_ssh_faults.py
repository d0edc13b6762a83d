"""Each way an SSH engine can fail to start is one line, soon, naming what to do; the server's error
output reaches this side's log; the ssh command never prompts, forwards nothing and checks host keys."""

import logging
import struct
import sys
import time

import pytest

from opt_desktop import __version__
from opt_desktop.engine import LoadRequest
from opt_desktop.engine.messages.errors import SettingsError
from opt_desktop.engine.process import protocol
from opt_desktop.engine.process.remote_engine import EngineDied
from opt_desktop.engine.process.ssh import SshEngine
from opt_desktop.engine.process.ssh_host import SshHost
from ssh_server import engine_command, free_port


def first_line(server, tmp_path=None, hello_timeout=30.0, **changes) -> tuple[str, float, list]:
    """Connect with the host changed by `changes`, ask for a load, and return the load's one line,
    how long it took to come, and what on_died heard."""
    host = server.host(command=changes.pop("command", engine_command()))
    host = host.model_copy(update=changes)
    died = []
    start = time.monotonic()
    engine = SshEngine(host, on_died=died.append, hello_timeout=hello_timeout)
    try:
        job = engine.submit(LoadRequest(source="demo", device="cpu"))
        end = job.wait(60)
        elapsed = time.monotonic() - start
        assert end is not None and end.reason == "error"
        with pytest.raises(EngineDied):
            job.future.result()
        assert "\n" not in end.message and "Traceback" not in end.message
        deadline = time.monotonic() + 10
        while not died and time.monotonic() < deadline:
            time.sleep(0.01)
        assert died == [end.message]
        return end.message, elapsed, died
    finally:
        engine.shutdown()
        assert engine.join(10)


def test_a_key_the_server_does_not_know_is_refused_in_one_line(ssh_server):
    line, _, _ = first_line(ssh_server, identity_file=str(ssh_server.stranger_key))
    assert line.startswith("test server refused the authentication (") and "Permission denied" in line
    assert "authorized_keys" in line


def test_a_port_nobody_listens_on_is_unreachable(ssh_server):
    line, _, _ = first_line(ssh_server, port=free_port())
    assert line.startswith(f"test server ({ssh_server.user}@127.0.0.1:") and "is unreachable" in line
    assert "Connection refused" in line


def test_an_unknown_host_key_is_refused_as_ssh_refuses_it(ssh_server, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    line, _, _ = first_line(ssh_server, options=(f"UserKnownHostsFile={empty}", "GlobalKnownHostsFile=/dev/null"))
    assert "host key is not known here or has changed" in line and "ssh -p" in line


def test_an_engine_command_that_is_not_there_says_how_to_install_it(ssh_server):
    line, _, _ = first_line(ssh_server, command="/nonexistent/venv/bin/opt-desktop-engine")
    assert line.startswith("The engine command `/nonexistent/venv/bin/opt-desktop-engine` was not found on test server")
    assert f"pipx install opt-desktop=={__version__}" in line and "full path" in line


def _says(tmp_path, data: bytes) -> str:
    """A command for the server that writes `data` on stdout and then stays (as a stuck program would)."""
    script = tmp_path / "says.py"
    script.write_text(f"import sys, time\nsys.stdout.buffer.write(bytes.fromhex({data.hex()!r}))\n"
                      "sys.stdout.flush()\ntime.sleep(120)\n")
    return f"{sys.executable} {script}"


def _hello(version: int, release: str) -> bytes:
    """Another release's Hello, framed as that release frames it (the header never changes)."""
    text = ('{"$t":"Hello","version":%d,"pid":7,"engine":"%s","host":"elsewhere"}' % (version, release)).encode()
    return protocol._HEADER.pack(protocol.MAGIC, version, len(text), 0) + text


@pytest.mark.parametrize("data, says", [
    (b"Welcome to the GPU cluster!\n", "sent something that is not an engine frame (it began with 'Welc'), so it was "
                                     "stopped. Is `"),
    (_hello(9, "9.0.0"), f"speaks protocol version 9 and this window version {protocol.PROTOCOL_VERSION} "
                         f"(OPT Desktop 9.0.0 there, {__version__} here): install the same release on test server "
                         f"(`pipx install opt-desktop=={__version__}`"),
    (_hello(protocol.PROTOCOL_VERSION, "0.0.1"), f"runs OPT Desktop 0.0.1 and this window {__version__}: install the "
                                                 "same release on test server"),
    (b"OPTE" + struct.pack("<II", 7, 0) + b'{"v":1}', "speaks protocol version 1"),
], ids=["a banner", "another protocol", "another release", "protocol 1"])
def test_a_command_that_is_not_this_engine_ends_in_one_line_at_once(ssh_server, tmp_path, data, says):
    line, elapsed, _ = first_line(ssh_server, command=_says(tmp_path, data))
    assert says in line
    assert elapsed < 20  # at once, not after the Hello timeout of 30 s


def test_a_silent_command_ends_when_no_hello_comes(ssh_server):
    line, elapsed, _ = first_line(ssh_server, command="sleep 120", hello_timeout=3.0)
    assert line.startswith("The engine on test server did not answer as an OPT Desktop engine within 3 s")


def test_the_servers_error_output_reaches_the_log(ssh_server, caplog):
    caplog.set_level(logging.INFO, logger="opt_desktop.engine.ssh")
    line, _, _ = first_line(ssh_server, command="echo 'CUDA driver too old for this torch' >&2; exit 3")
    assert line == ("The engine command `echo 'CUDA driver too old for this torch' >&2; exit 3` on test server ended "
                    "before it answered (exit code 3): CUDA driver too old for this torch.")
    assert any(r.getMessage() == "test server: CUDA driver too old for this torch" for r in caplog.records)


# --- the ssh command itself ------------------------------------------------------------------------

def test_the_ssh_command_never_prompts_forwards_or_skips_host_keys():
    host = SshHost(name="gpu", destination="me@gpu.example.org", port=2222, identity_file="~/.ssh/id_gpu",
                   command="~/venvs/opt/bin/opt-desktop-engine")
    args = host.ssh_args("ssh")
    joined = " ".join(args)
    for option in ("BatchMode=yes", "ClearAllForwardings=yes", "ForwardAgent=no", "ForwardX11=no", "IdentitiesOnly=yes"):
        assert option in joined
    assert "-T" in args and "StrictHostKeyChecking" not in joined and "-L" not in args and "-R" not in args
    assert args[-3:] == ["--", "me@gpu.example.org", "~/venvs/opt/bin/opt-desktop-engine"]
    assert args[args.index("-p") + 1] == "2222" and args[args.index("-i") + 1] == "~/.ssh/id_gpu"
    assert host.address == "me@gpu.example.org:2222" and "id_gpu" not in host.address


@pytest.mark.parametrize("url, destination, port", [
    ("ssh://gpu1", "gpu1", None), ("ssh://me@gpu1:2222", "me@gpu1", 2222), ("ssh://me@[::1]:22", "me@[::1]", 22),
])
def test_engine_addresses(url, destination, port):
    host = SshHost.from_url(url)
    assert (host.destination, host.port, host.command) == (destination, port, "opt-desktop-engine")


@pytest.mark.parametrize("values, says", [
    ({"destination": "-oProxyCommand=touch /tmp/x"}, "not beginning with '-'"),
    ({"destination": "me@gpu 1"}, "without spaces"),
    ({"options": ("StrictHostKeyChecking=no",)}, "cannot be changed here"),
    ({"options": ("LocalForward=8080 localhost:80",)}, "cannot be changed here"),
    ({"options": ("-v",)}, "not an ssh option"),
    ({"port": 70000}, "port"),
])
def test_a_host_that_would_break_the_promises_is_refused(values, says):
    with pytest.raises(SettingsError, match=says):
        SshHost.parse(**{"name": "gpu", "destination": "gpu1", **values})


@pytest.mark.parametrize("url", ["gpu1", "http://gpu1", "ssh://gpu1/path", "ssh://gpu1:notaport"])
def test_an_address_that_is_not_ssh_is_refused(url):
    with pytest.raises(SettingsError):
        SshHost.from_url(url)
