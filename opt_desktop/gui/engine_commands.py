"""Where the engine runs: this computer or an SSH host (the model bar's engine chooser), the hosts kept
in the app's state, the connection's steps, and Reconnect.

Choosing a place ends the engine the window had (its model with it) and starts one there: a child
process on this computer, or `ssh HOST opt-desktop-engine` (engine/process/ssh.py), whose steps
(connecting, authenticating, starting the engine, its release and the server's devices) reach the
GUI thread through the event loop. The next start begins at the same place, with the model loaded
last. A failure is one line in the banner, "Not connected" under the model bar, and Reconnect in
both; the runs of the session stay.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from PySide6.QtCore import QObject

from ..engine.jobs.engine import Engine
from ..engine.messages.requests import CacheRequest
from ..engine.process.ssh import ConnectStep, SshEngine
from ..engine.process.ssh_host import SshHost
from .widgets.ssh_host_dialog import REMOVED, SshHostDialog

log = logging.getLogger(__name__)

ENGINE_MESSAGE = "engine"  # the banner's key for what happened to the engine


def local_engine_like(engine: Engine) -> Callable[[], Engine]:
    """What makes a fresh engine on this computer of the kind `engine` is: a process of its own
    (the app's default) or a thread of the window's process (--engine thread, tests)."""
    from ..engine import EngineService
    from ..engine.process.engine_process import EngineProcess

    return EngineProcess if isinstance(engine, EngineProcess) else EngineService


class EngineCommands(QObject):
    def __init__(self, controller, state, models, views, local_engine: Callable[[], Engine],
                 parent: QObject | None = None):
        """`models`: the ModelCommands (a new engine is probed again); `views` has model_bar, banner
        and the window (as `window`); `local_engine()` makes an engine on this computer."""
        super().__init__(parent)
        self.controller = controller
        self.state = state
        self.models = models
        self.v = views
        self._local_engine = local_engine
        chooser = views.model_bar.engine_chooser
        chooser.set_hosts(state.ssh_hosts, None)
        chooser.place_chosen.connect(self.choose)
        chooser.add_requested.connect(self.add_host)
        chooser.edit_requested.connect(self.edit_host)
        views.model_bar.connection.reconnect_requested.connect(self.models.reconnect)
        controller.engine_died.connect(self._on_engine_died)

    # --- choosing a place ------------------------------------------------------------------------

    def choose(self, host: SshHost | None) -> None:
        """Run the engine on `host` (None: this computer) from now on; the model must be loaded there."""
        if host == self.controller.place:
            return
        if host is None:
            engine = self._local_engine()
            log.info("The engine runs on this computer")
        else:
            loop = asyncio.get_event_loop()
            engine = SshEngine(host, on_step=lambda step: loop.call_soon_threadsafe(self._on_step, host, step),
                               on_died=self.controller.died_callback())
        self.controller.switch_engine(engine, host)
        self.state.engine_host = host.name if host is not None else None  # the next start begins here
        self.state.save()
        self.v.model_bar.set_place(host)
        self.v.banner.dismiss(ENGINE_MESSAGE)
        self.v.model_bar.set_cached([], "")  # another machine, another cache
        if host is None:
            self.v.model_bar.connection.show_local()
        self.models.engine_changed()

    def resume(self, name: str | None) -> bool:
        """At start: run the engine on the host called `name` again, if it is still kept; True if so."""
        host = next((h for h in self.state.ssh_hosts if h.name == name), None)
        if host is not None:
            self.v.model_bar.engine_chooser.choose(host)
        return host is not None

    def _on_step(self, host: SshHost, step: ConnectStep) -> None:
        if self.controller.closed or host != self.controller.place:
            return  # a step of a connection the window has since left
        self.v.model_bar.connection.show_step(step)
        if step.stage == "ready":
            log.info("%s", step.text)
            self.controller.spawn(self._list_cached(host))

    async def _list_cached(self, host: SshHost) -> None:
        """The server's cached models join the model list (a failure leaves the list as it was)."""
        end = await self.controller.wait(self.controller.submit(CacheRequest()))
        if end.reason == "done" and host == self.controller.place:
            self.v.model_bar.set_cached([m.repo_id for m in end.result.models if m.complete], host.name)

    def _on_engine_died(self, line: str) -> None:
        if self.controller.place is not None:
            self.v.model_bar.connection.show_failure(self.controller.place.name, line)

    # --- the hosts -------------------------------------------------------------------------------

    def _save_hosts(self, hosts: list[SshHost], current: SshHost | None) -> None:
        self.state.ssh_hosts = hosts
        self.state.save()
        self.v.model_bar.engine_chooser.set_hosts(hosts, current)

    def add_host(self) -> SshHostDialog:
        dialog = SshHostDialog(self.v.window, taken=tuple(h.name for h in self.state.ssh_hosts))
        dialog.finished.connect(lambda result: self._added(dialog, result))
        dialog.open()
        return dialog

    def _added(self, dialog: SshHostDialog, result: int) -> None:
        host = dialog.host()
        if result != SshHostDialog.DialogCode.Accepted or host is None:
            return
        self._save_hosts(self.state.ssh_hosts + [host], self.controller.place)
        self.v.model_bar.engine_chooser.choose(host)  # a host is added to be used

    def edit_host(self, host: SshHost) -> SshHostDialog:
        dialog = SshHostDialog(self.v.window, host=host, taken=tuple(h.name for h in self.state.ssh_hosts))
        dialog.finished.connect(lambda result: self._edited(dialog, host, result))
        dialog.open()
        return dialog

    def _edited(self, dialog: SshHostDialog, old: SshHost, result: int) -> None:
        hosts = list(self.state.ssh_hosts)
        if result == REMOVED:
            self._save_hosts([h for h in hosts if h != old], self.controller.place)
            if self.controller.place == old:
                self.v.model_bar.engine_chooser.choose(None)
            return
        new = dialog.host()
        if result != SshHostDialog.DialogCode.Accepted or new is None or new == old:
            return
        self._save_hosts([new if h == old else h for h in hosts], self.controller.place)
        if self.controller.place == old:
            self.v.model_bar.engine_chooser.choose(new)  # connect with what was changed
