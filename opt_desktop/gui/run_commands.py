"""Generate, Regenerate, Continue, Fork, Re-run and Stop: requests built from plain data, one job each.

Each command builds a GenerationRequest from the settings panel and the Qt-free interventions
model, and a RunOrigin saying where the run comes from; both travel with the job. One coroutine
follows each run from its first event to its autosave; nothing about a run is kept in fields once
its job has ended.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject

from ..engine import Finished, GenerationRequest, GenerationSettings, InspectSettings, SettingsError, Started
from ..engine.jobs.job import Job
from ..session import RunTrace
from ..session.next_run import Interventions, RunOrigin
from ..session.requests import fork_request, rerun_requests

log = logging.getLogger(__name__)


def same_model(info, trace: RunTrace | None) -> bool:
    """Is `info` (the loaded model) the model `trace` was made with?"""
    if info is None or trace is None:
        return False
    m = trace.started.model
    return (info.source, info.dtype, info.n_layers, info.hidden_size) == (m.source, m.dtype, m.n_layers, m.hidden_size)


def _close_record(trace: RunTrace, end) -> None:
    """End a run's record the engine left open, with what it made and why it stopped there."""
    elapsed = trace.elapsed[-1] if trace.elapsed else 0.0
    trace.apply(Finished(reason="error" if end.reason == "error" else "cancelled", text=trace.text,
                         token_ids=tuple(trace.generated_ids), n_tokens=trace.n_generated, elapsed_s=elapsed,
                         time_to_first_token_s=trace.elapsed[0] if trace.elapsed else None, tokens_per_s=None,
                         message=end.message))


class _Follower:
    """Turns one generation job's events into a run of the session, shown as it grows."""

    def __init__(self, commands: "RunCommands", origin: RunOrigin):
        self.c = commands
        self.origin = origin
        self.trace: RunTrace | None = None

    def on_events(self, events: list) -> None:
        for event in events:
            if isinstance(event, Started):
                self.trace = RunTrace(event)
                self.origin.apply(self.trace)
                index = self.c.keeper.add_run(self.trace)
                self.c.presenter.run_started(index)
                for notice in self.trace.notices:
                    self.c.banner.show_notice(notice)
                asked = event.settings.get("max_new_tokens", event.max_new_tokens)
                self.c.v.settings_panel.show_max_new_tokens_in_force(asked, event.max_new_tokens)
            elif self.trace is not None:
                self.trace.apply(event)
        if self.trace is not None:
            self.c.presenter.run_updated(self.trace)


class RunCommands(QObject):
    def __init__(self, controller, keeper, presenter, interventions: Interventions, views, say, load_model,
                 parent: QObject | None = None):
        """`views` has prompt, settings_panel, keep_rows_action, show_prompt_action, output, banner;
        `say(text)` puts a passing line in the status bar; `load_model(request)` loads and returns its Job."""
        super().__init__(parent)
        self.load_model = load_model
        self.controller = controller
        self.keeper = keeper
        self.presenter = presenter
        self.interventions = interventions
        self.v = views
        self.banner = views.banner
        self.say = say
        self.last_request: GenerationRequest | None = None  # what Regenerate repeats when no run is shown
        self.in_flight = 0  # runs submitted and not yet autosaved and shown finished

    # --- starting a run --------------------------------------------------------------------------

    def start(self, request: GenerationRequest, origin: RunOrigin = RunOrigin()) -> Job | None:
        """Submit one generation now, or say why not. The busy state is set here, synchronously, so
        a second press (even one queued while the window was busy) is refused, never run twice."""
        c = self.controller
        if c.is_running or c.is_analysing:
            self.say("Already working: wait for the run to finish, or press Stop (Esc).")
            return None
        if c.model is None and not c.is_loading:
            self.banner.show_error("No model is loaded yet: choose one in the bar above and press Load.")
            return None
        if c.is_loading:
            self.say("The model is still loading: the run starts as soon as it has loaded.")
        follower = _Follower(self, origin)
        job = c.submit(request, origin=origin, on_events=follower.on_events)
        self.last_request = request
        self.in_flight += 1
        c.spawn(self._follow(job, follower))
        return job

    async def _follow(self, job: Job, follower: _Follower) -> None:
        trace = None
        try:
            end = await self.controller.wait(job)
            trace = follower.trace
            if trace is not None and trace.finished is None:
                _close_record(trace, end)  # the engine could not end it (its process died)
            if trace is not None:
                # On disk before it is shown as finished: a crash after "finished" loses nothing.
                await self.keeper.autosave_finished_run()
        finally:
            self.in_flight -= 1
        if trace is not None:
            self.presenter.run_finished(trace)
        if end.reason == "error":
            self.banner.show_error(end.message, end.details)
        elif end.reason == "cancelled" and trace is None and not self.controller.closed:
            self.say("The run was cancelled before it started.")

    # --- the commands ------------------------------------------------------------------------------

    def _settings(self, action: str) -> GenerationSettings | None:
        """The panel's settings, or None after telling the person why they cannot be used."""
        try:
            return self.v.settings_panel.settings()
        except SettingsError as exc:
            self.banner.show_error(f"Cannot {action}: {exc}")
            return None

    def _inspect(self) -> InspectSettings:
        return InspectSettings(keep_attention_rows=self.v.keep_rows_action.isChecked())

    def generate(self) -> Job | None:
        if (settings := self._settings("generate")) is None:
            return None
        prompt = self.v.prompt.text()
        try:
            extra = self.interventions.for_prompt(prompt)
        except SettingsError as exc:
            self.banner.show_error(str(exc))
            return None
        return self.start(GenerationRequest(prompt=prompt, settings=settings, inspect=self._inspect(), **extra))

    def regenerate(self) -> Job | None:
        """The shown run's prompt (token for token) again, else the last request, with today's settings."""
        shown = self.presenter.trace
        if shown is not None:
            base = GenerationRequest(prompt=shown.started.prompt, prompt_ids=tuple(shown.token_ids[: shown.n_prompt]))
        elif self.last_request is not None:
            base = self.last_request
        else:
            return None
        if (settings := self._settings("regenerate")) is None:
            return None
        return self.start(base.replace(settings=settings, inspect=self._inspect(),
                                       head_mask=self.interventions.head_mask,
                                       hidden_positions=self.interventions.hidden_positions))

    def continue_run(self) -> Job | None:
        trace = self.presenter.trace
        if trace is None or trace.finished is None or (settings := self._settings("continue")) is None:
            return None
        # The earlier prompt and output become the new prompt, token for token (no re-tokenising).
        request = GenerationRequest(prompt=trace.started.prompt + trace.text, prompt_ids=tuple(trace.token_ids),
                                    settings=settings, inspect=self._inspect(),
                                    head_mask=self.interventions.head_mask,
                                    hidden_positions=trace.started.hidden_positions)
        job = self.start(request, RunOrigin(parent=self.presenter.current))
        if job is not None:
            self.v.show_prompt_action.setChecked(True)  # so the earlier output stays in view, then grows
            self.v.output.set_show_prompt(True)
        return job

    def fork(self, position: int, token_id: int) -> Job | None:
        """Branch the shown run at `position` with another token, and continue with the same settings."""
        trace = self.presenter.trace
        if trace is None or trace.finished is None or self.controller.is_busy:
            self.banner.show_error("Wait for the run to finish before forking it.")
            return None
        if not same_model(self.controller.model, trace):
            self.banner.show_error(f"Forking continues with the run's model: load {trace.started.model.label} "
                                   f"({trace.started.model.dtype}) first.")
            return None
        try:
            request = fork_request(trace, position, token_id)
        except SettingsError as exc:
            self.banner.show_error(f"Cannot fork: {exc}")
            return None
        return self.start(request.replace(inspect=self._inspect()),
                          RunOrigin(parent=self.presenter.current, fork_position=position))

    def rerun(self) -> None:
        """Run the shown run again with its recorded model, settings and seed, loading that model
        first when another is loaded."""
        trace = self.presenter.trace
        if trace is None or trace.finished is None or self.controller.is_busy:
            return
        self.controller.spawn(self._rerun(trace, self.presenter.current))

    async def _rerun(self, trace: RunTrace, index: int) -> None:
        load, request = rerun_requests(trace)
        origin = RunOrigin(label=f"re-run of #{index + 1}")
        if not same_model(self.controller.model, trace):
            self.banner.show_notice(f"Loading {trace.started.model.label} to re-run #{index + 1}…", key="rerun")
            end = await self.controller.wait(self.load_model(load))
            self.banner.dismiss("rerun")
            if end.reason != "done":
                return  # the load says why; nothing of this re-run is left behind
        self.start(request, origin)

    def stop(self) -> None:
        self.controller.stop()

    # --- what the next run carries ------------------------------------------------------------------

    def set_hidden(self, positions) -> None:
        """Prompt tokens the person hid from attention (in the shown run's prompt)."""
        trace = self.presenter.trace
        self.interventions.set_hidden(positions, trace.started.prompt if trace is not None else None)

    def set_head_mask(self, mask) -> None:
        """The mask edited in the attention grid: the next run's, and the running one's from its next token."""
        self.interventions.set_head_mask(mask)
        self.controller.set_head_mask(self.interventions.head_mask)
