"""A real OpenSSH server on 127.0.0.1, for tests and benchmarks of the engine over SSH.

Debian's `sshd` (package openssh-server; `.ci/run` installs it) on a free port with a host key,
a user key and an authorized_keys file of its own, all in a temporary folder: public keys only,
no passwords, nothing of the machine's own SSH setup read or changed. Clients check its host key
against a known_hosts file of the same folder, as ssh checks any host's.

    with SshServer(folder) as server:
        host = server.host(command=".../opt-desktop-engine")   # an SshHost that reaches it
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def sshd_missing() -> str | None:
    """Why no test server can run here, or None."""
    if not Path(SSHD).is_file():
        return "OpenSSH's server is not installed (apt-get install openssh-server; .ci/run does it)"
    if not shutil.which("ssh"):
        return "OpenSSH's client is not installed"
    return None


def engine_command() -> str:
    """What starts this checkout's engine on the test server: the console script its install made."""
    script = Path(sys.executable).parent / "opt-desktop-engine"
    return str(script) if script.is_file() else f"{sys.executable} -m opt_desktop.engine.process.worker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_key(path: Path) -> Path:
    """A new ed25519 key pair without a passphrase (path, path.pub)."""
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "opt-desktop-test", "-f", str(path)],
                   check=True)
    return path


class SshServer:
    def __init__(self, folder: Path, env: dict[str, str] | None = None):
        """`env`: variables set for the commands the server runs (sshd_config's SetEnv)."""
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.env = dict(env or {})
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.user = getpass.getuser()
        self.host_key = make_key(self.folder / "host_key")
        self.user_key = make_key(self.folder / "user_key")
        self.stranger_key = make_key(self.folder / "stranger_key")  # a key the server does not know
        (self.folder / "authorized_keys").write_text((self.folder / "user_key.pub").read_text())
        self.known_hosts = self.folder / "known_hosts"
        self.log = self.folder / "sshd.log"

    def _config(self) -> Path:
        lines = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {self.folder / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.folder / 'authorized_keys'}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",  # the tests may run as root: keys only
            "StrictModes no",  # the temporary folder's modes are not the person's ~/.ssh
            "UsePAM no",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PrintMotd no",
            "LogLevel VERBOSE",
        ]
        if self.env:
            lines.append("SetEnv " + " ".join(f"{k}={v}" for k, v in self.env.items()))
        path = self.folder / "sshd_config"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> "SshServer":
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation folder
        config = None
        for _ in range(5):  # a free port can be taken between choosing it and binding it
            self.port = free_port()
            config = self._config()
            self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
            if self._listening(10.0):
                break
            self.stop()
        else:
            raise RuntimeError(f"sshd did not start: {self.log.read_text(errors='replace')[-2000:]}")
        key = (self.folder / "host_key.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {key[0]} {key[1]}\n")
        return self

    def _listening(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "SshServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def options(self) -> tuple[str, ...]:
        """What a client needs besides the key: this server's host key in a known_hosts file of its own."""
        return (f"UserKnownHostsFile={self.known_hosts}", "GlobalKnownHostsFile=/dev/null")

    def host(self, command: str, key: Path | None = None, name: str = "test server", port: int | None = None):
        from opt_desktop.engine.process.ssh_host import SshHost

        return SshHost(name=name, destination=f"{self.user}@127.0.0.1", port=port or self.port,
                       identity_file=str(key or self.user_key), command=command, options=self.options())
