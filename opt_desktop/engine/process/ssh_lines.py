"""What an ssh connection's end means, in one line for the person.

ssh exits 255 for its own failures and says why on stderr (OpenSSH's wording, stable for decades:
"Connection refused", "Permission denied", "Host key verification failed", ...); otherwise it
exits with the remote command's status (127: the shell found no such command). Which of those it
was, and whether the engine had already said Hello, decide the line.
"""

from __future__ import annotations

import re

from ...formatting import format_bytes
from .ssh_host import SshHost

_UNREACHABLE = ("Could not resolve hostname", "Connection refused", "No route to host", "Connection timed out",
                "Network is unreachable", "Operation timed out", "Name or service not known",
                "Temporary failure in name resolution", "Connection reset", "kex_exchange_identification",
                "Connection closed by")
_AUTH = ("Permission denied", "Too many authentication failures", "no mutual signature algorithm")
_HOST_KEY = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED", "No matching host key")
_NOT_FOUND = ("command not found", "No such file or directory", "not found")
_TRANSFERRED = re.compile(r"Transferred: sent (\d+), received (\d+) bytes")
_PIPX = "pipx install opt-desktop=={v}"


def transferred(line: str) -> tuple[int, int] | None:
    """(sent, received) from ssh's closing "Transferred: sent N, received M bytes" line."""
    m = _TRANSFERRED.search(line)
    return (int(m.group(1)), int(m.group(2))) if m else None


def install_advice(host: SshHost, version: str) -> str:
    return (f"install the same release on {host.name} (`{_PIPX.format(v=version)}`, or "
            f"`pip install opt-desktop=={version}` in the environment its engine command runs from).")


def _first(lines: list[str], needles: tuple[str, ...]) -> str | None:
    for line in lines:
        if any(n in line for n in needles):
            return line.removeprefix("ssh: ").strip().rstrip(".")  # it goes inside a sentence
    return None


def _own_lines(lines: list[str]) -> list[str]:
    """ssh's lines that are not its banner or its closing statistics."""
    return [line for line in lines if not line.startswith(("OpenSSH_", "Transferred: ", "Bytes per second", "Authenticated to "))]


def describe_end(host: SshHost, status: int, greeted: bool, lines: list[str], authenticated: bool,
                 remote_status: int | None, recovery: str) -> str:
    """The one line for an ssh connection to an engine that ended by itself (or was never made).

    `lines`: what ssh printed on stderr (its own messages and the server's), without -v's debug
    lines; `authenticated`: ssh said it had logged in; `remote_status`: the engine command's own exit
    status as ssh reported it (-1 when it was ended by a signal), None when the connection ended first.
    """
    own = _own_lines(lines)
    last = own[-1].removeprefix("ssh: ").strip() if own else ""
    if not authenticated and not greeted:
        if (line := _first(own, _HOST_KEY)) is not None:
            return (f"{host.name}'s host key is not known here or has changed, so ssh refused to connect ({line}): "
                    f"connect once with `{host.terminal_command()}` in a terminal to check and accept it.")
        if (line := _first(own, _AUTH)) is not None:
            return (f"{host.name} refused the authentication ({line}): its ~/.ssh/authorized_keys must hold your "
                    f"public key (see the README); `{host.terminal_command()}` in a terminal shows the same.")
        if (line := _first(own, _UNREACHABLE)) is not None:
            return f"{host.name} ({host.address}) is unreachable: {line}."
        return f"ssh could not connect to {host.name} ({host.address}): {last or f'exit code {status}'}."
    if not greeted:
        if status == 127 or (remote_status is not None and remote_status >= 0 and _first(own, _NOT_FOUND)):
            return (f"The engine command `{host.command}` was not found on {host.name}"
                    f"{f' ({last})' if last else ''}: install OPT Desktop there ({_PIPX.format(v=_version())}) or give "
                    "the host the command's full path, e.g. ~/venvs/opt/bin/opt-desktop-engine.")
        if remote_status is None:
            return f"Connection to {host.name} lost while the engine was starting{f' ({last})' if last else ''}."
        return (f"The engine command `{host.command}` on {host.name} ended before it answered "
                f"({_status(remote_status)}){f': {last}' if last else ''}.")
    if remote_status is None:
        return f"Connection to {host.name} lost{f' ({last})' if last else ''}. {recovery}"
    return f"The engine on {host.name} stopped unexpectedly ({_status(remote_status)}). {recovery}"


def _status(remote_status: int) -> str:
    # ssh reports -1 for a command ended by a signal (SIGKILL from the out-of-memory killer, say).
    return "it was killed or ran out of memory" if remote_status < 0 else f"exit code {remote_status}"


def _version() -> str:
    from ... import __version__

    return __version__


def describe_machine(machine) -> str:
    """ "2 GPUs: NVIDIA H100 80GB HBM3 (79.1 GiB), …; RAM 2.0 TiB (1.8 TiB free)" for a MachineMemory."""
    ram = f"RAM {format_bytes(machine.ram_total)} ({format_bytes(machine.ram_available)} free)"
    if not machine.gpus:
        return f"no CUDA GPU; {ram}"
    gpus = ", ".join(f"{g.device} {g.name} ({format_bytes(g.total)})" for g in machine.gpus)
    return f"{len(machine.gpus)} GPU{'s' if len(machine.gpus) != 1 else ''}: {gpus}; {ram}"
