"""A place an engine can run: an SSH host, as the person names it, and the ssh command that reaches it.

Plain, validated data (the window keeps hosts in its settings, the CLI parses `ssh://[user@]host[:port]`).
It holds no secret: an identity file is a path to a key, never the key, and passwords are never
asked for (BatchMode).

The command is the system's OpenSSH client, so the person's keys, agent and ~/.ssh/config apply and
host keys are checked as ssh checks them. Nothing but the engine command runs on the server, and
no port is opened anywhere: port forwardings from any configuration are cleared.
"""

from __future__ import annotations

import re
import shlex
import shutil
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..messages.errors import SettingsError

DEFAULT_COMMAND = "opt-desktop-engine"
CONNECT_TIMEOUT_S = 15
# A link that stops carrying anything (a cable pulled, a laptop asleep) is noticed after
# interval x count seconds: ssh then ends, and every job with it.
ALIVE_INTERVAL_S = 10
ALIVE_COUNT = 3

# What ssh is always told: never prompt (a password prompt would hang an engine nobody types into),
# no terminal (the stream is binary), no escape character, no agent or X11 forwarding, and no port
# forwarding from any configuration file.
_FIXED = ("-T", "-e", "none", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
          "-o", f"ServerAliveInterval={ALIVE_INTERVAL_S}", "-o", f"ServerAliveCountMax={ALIVE_COUNT}",
          "-o", "ClearAllForwardings=yes", "-o", "ForwardAgent=no", "-o", "ForwardX11=no",
          "-o", "PermitLocalCommand=no")
_OPTION = re.compile(r"^[A-Za-z][A-Za-z0-9]*=\S.*$")
# Options that would weaken what this module promises (host keys checked, no forwarding, no prompt).
_REFUSED_OPTIONS = {"stricthostkeychecking", "batchmode", "localforward", "remoteforward", "dynamicforward",
                    "forwardagent", "forwardx11", "permitlocalcommand", "localcommand", "requesttty",
                    "clearallforwardings", "tunnel"}


class SshHost(BaseModel):
    """An engine reached with `ssh [-p PORT] [-i KEY] DESTINATION COMMAND`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="what the engine chooser calls it")
    destination: str = Field(min_length=1, max_length=300, description="[user@]host, or a Host alias of ~/.ssh/config")
    port: int | None = Field(None, ge=1, le=65535, description="None: ssh's own choice (22, or ~/.ssh/config's)")
    identity_file: str | None = Field(None, max_length=1000, description="a private key file; None: the agent and ssh's defaults")
    command: str = Field(DEFAULT_COMMAND, min_length=1, max_length=1000, description="starts the engine on the server")
    options: tuple[str, ...] = Field((), description="more ssh options, each Key=Value as after -o")

    @field_validator("name", "command")
    @classmethod
    def _stripped(cls, v: str) -> str:
        v = v.strip()
        if not v or "\n" in v or "\r" in v:
            raise ValueError("must be one line of text")
        return v

    @field_validator("destination")
    @classmethod
    def _destination(cls, v: str) -> str:
        v = v.strip()
        # ssh would read a leading "-" as an option, and a space would split the argument.
        if not v or v.startswith("-") or any(c.isspace() for c in v):
            raise ValueError("must be [user@]host, without spaces, not beginning with '-'")
        return v

    @field_validator("identity_file")
    @classmethod
    def _identity(cls, v: str | None) -> str | None:
        v = (v or "").strip()
        return v or None

    @field_validator("options")
    @classmethod
    def _options(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for option in v:
            if not _OPTION.match(option):
                raise ValueError(f"{option!r} is not an ssh option of the form Key=Value")
            if option.split("=", 1)[0].lower() in _REFUSED_OPTIONS:
                raise ValueError(f"{option.split('=', 1)[0]} cannot be changed here: the engine's link sets it")
        return v

    @classmethod
    def parse(cls, **values) -> "SshHost":
        """An SshHost, or SettingsError with one line naming what is wrong."""
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "host"
            raise SettingsError(f"SSH host: {where} {first['msg'].removeprefix('Value error, ')}") from None

    @classmethod
    def from_url(cls, url: str, command: str | None = None, identity_file: str | None = None,
                 options: tuple[str, ...] = ()) -> "SshHost":
        """`ssh://[user@]host[:port]` (as opt-desktop-cli's --engine takes it)."""
        parts = urlsplit(url.strip())
        if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise SettingsError(f"{url!r} is not an engine address: write ssh://[user@]host[:port]")
        try:
            port = parts.port
        except ValueError:
            raise SettingsError(f"{url!r}: the port must be a number from 1 to 65535") from None
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        destination = f"{parts.username}@{host}" if parts.username else host
        return cls.parse(name=parts.hostname, destination=destination, port=port, identity_file=identity_file,
                         command=command or DEFAULT_COMMAND, options=tuple(options))

    @property
    def address(self) -> str:
        """user@host:port as the person wrote it (no key path: this may be recorded and shown)."""
        return self.destination if self.port is None else f"{self.destination}:{self.port}"

    def ssh_args(self, ssh: str | None = None, verbose: bool = True) -> list[str]:
        """The ssh command line that starts the engine there. `verbose` (-v) makes ssh report its
        steps (connected, authenticated) on stderr; ssh.py reads them."""
        args = [ssh or shutil.which("ssh") or "ssh", *(("-v",) if verbose else ()), *_FIXED]
        if self.port is not None:
            args += ["-p", str(self.port)]
        if self.identity_file is not None:
            args += ["-i", self.identity_file, "-o", "IdentitiesOnly=yes"]
        for option in self.options:
            args += ["-o", option]
        # The command goes to the server's login shell as one string (so ~ and $HOME expand there).
        return [*args, "--", self.destination, self.command]

    def terminal_command(self) -> str:
        """What the person can type to try the same connection (for a line that says what failed)."""
        args = ["ssh"]
        if self.port is not None:
            args += ["-p", str(self.port)]
        if self.identity_file is not None:
            args += ["-i", self.identity_file]
        return shlex.join([*args, self.destination])
