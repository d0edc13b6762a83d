"""What the analyses can run on now, and running them: the logit lens of a token, the divergence of
two compared runs, head importance of the shown run. Each is one job awaited in one coroutine."""

from __future__ import annotations

import weakref

from PySide6.QtCore import QObject

from ..engine.messages.interventions_spec import normalize_head_mask
from ..engine.jobs.job import JobProgress
from ..engine.messages.requests import (
    AttributionRequest,
    DivergenceRequest,
    HeadImportanceRequest,
    LensRequest,
    LensTableRequest,
    PatchingRequest,
)
from ..session.compare import compare_runs
from ..session.describe import run_title
from .run_commands import same_model


class Analysis(QObject):
    def __init__(self, controller, keeper, presenter, views, parent: QObject | None = None):
        """`views` has tabs, inspector, output, compare, importance, attribution, patching, banner and
        show_prompt_action; the analyses connect to their views' signals here."""
        super().__init__(parent)
        self.controller = controller
        self.keeper = keeper
        self.presenter = presenter
        self.v = views
        self.compared: tuple[int | None, int | None] = (None, None)  # the runs the Compare tab shows
        self._lens_job = None  # the background lens table being computed, if any (its run is its origin)
        self._attribution_position: int | None = None  # the token of the shown run the Attribution tab explains
        self._no_lens: weakref.WeakSet = weakref.WeakSet()  # runs whose lens table failed
        controller.busy_changed.connect(self.schedule_lens_tables)
        controller.model_changed.connect(lambda _: self.schedule_lens_tables())
        presenter.shown_changed.connect(self.show_run_analyses)
        v = views
        v.inspector.lens_requested.connect(self.request_lens)
        v.compare.runs_chosen.connect(self.compare_runs)
        v.compare.divergence_requested.connect(self.request_divergence)
        v.importance.start_requested.connect(self.start_importance)
        v.importance.stop_requested.connect(self.stop_importance)
        v.importance.head_clicked.connect(self.show_head)
        v.output.explain_requested.connect(self.explain_token)
        v.attribution.run_requested.connect(self.start_attribution)
        v.attribution.stop_requested.connect(self.stop_attribution)
        v.attribution.position_clicked.connect(v.output.set_selected)
        v.patching.run_requested.connect(self.start_patching)
        v.patching.stop_requested.connect(self.stop_patching)

    # --- the logit lens -------------------------------------------------------------------------

    def request_lens(self, position: int) -> None:
        trace = self.presenter.trace
        if trace is None:
            return
        stored = trace.lens_at(position)
        if stored is not None:  # computed after the run from exact rows, and kept with it: no model needed
            self.v.inspector.set_lens(stored, trace.lens_ranks(position))
            return
        if not same_model(self.controller.model, trace):
            self.v.inspector.set_lens_unavailable(f"the logit lens needs this run's model: load "
                                                  f"{trace.started.model.label} ({trace.started.model.dtype})")
            return
        rows = trace.residual_rows(position)
        if rows is None:
            reason = ("the last token was never fed to the model" if position == trace.length - 1
                      else "residual rows were not kept for this run")
            self.v.inspector.set_lens_unavailable(reason)
            return
        job = self.controller.submit(LensRequest(rows, trace.next_token(position), position))
        self.controller.spawn(self._show_lens(job))

    async def _show_lens(self, job) -> None:
        end = await self.controller.wait(job)
        if end.reason == "done":
            if end.result.position == self.v.inspector.selected_position():
                self.v.inspector.set_lens(end.result)
        elif end.reason == "error":
            self.v.inspector.set_lens_unavailable(end.message)

    # --- the lens of every position, kept with the run ------------------------------------------------

    def schedule_lens_tables(self) -> None:
        """While nothing else runs, compute (one run at a time) the lens table of every finished run of
        the loaded model that lacks one; anything the person starts makes it give way."""
        c = self.controller
        if c.closed or self._lens_job is not None or c.is_busy or c.model is None:
            return
        for index in reversed(range(len(self.keeper.session.runs))):  # the newest first
            trace = self.keeper.session.runs[index]
            if (trace.finished is not None and trace.finished.n_tokens and trace not in self._no_lens
                    and trace.lens_table() is None and same_model(c.model, trace)):
                break
        else:
            return
        self._lens_job = c.submit(LensTableRequest(**trace.lens_request()), origin=trace)
        c.spawn(self._keep_lens_table(self._lens_job))

    async def _keep_lens_table(self, job) -> None:
        end = await self.controller.wait(job)
        self._lens_job = None
        trace = job.origin
        if end.reason == "done" and trace in self.keeper.session.runs and trace.lens_table() is None:
            trace.set_lens_table(end.result)
            self.keeper.set_modified(True)
            if trace is self.presenter.trace:
                position = self.v.inspector.selected_position()
                if position is not None:
                    self.request_lens(position)
        elif end.reason == "error":
            self._no_lens.add(trace)  # not tried again in this sitting; the log has why
        self.schedule_lens_tables()


    # --- compare ----------------------------------------------------------------------------------

    def refresh_compare_choices(self) -> None:
        """The run choices of the Compare tab; only while it is in view (it redraws two texts and plots)."""
        if self.v.tabs.currentWidget() is not self.v.compare:
            return  # it catches up when shown
        runs = self.keeper.session.runs
        self.v.compare.set_choices([run_title(i, t) for i, t in enumerate(runs)])

    def compare_runs(self, a: int, b: int) -> None:
        runs = self.keeper.session.runs
        if not (0 <= a < len(runs) and 0 <= b < len(runs)):
            self.v.compare.set_runs(None, None)
            return
        self.compared = (a, b)
        self.v.compare.set_runs(runs[a], runs[b], f"#{a + 1}", f"#{b + 1}")
        self.refresh_compare_availability()

    def forget_compared(self) -> None:
        self.compared = (None, None)
        self.v.compare.set_runs(None, None)
        self.refresh_compare_choices()

    def refresh_compare_availability(self) -> None:
        a, b = self.compared
        runs = self.keeper.session.runs
        if a is None or b is None or max(a, b) >= len(runs):
            return
        ra, rb = runs[a], runs[b]
        if not compare_runs(ra, rb).same_model:
            self.v.compare.set_divergence_available(False, "The two runs used different models: the KL divergence "
                                                           "between their distributions is not defined here.")
        elif not same_model(self.controller.model, ra):
            self.v.compare.set_divergence_available(False, f"Load {ra.started.model.label} "
                                                           f"({ra.started.model.dtype}) to compute the divergence.")
        else:
            self.v.compare.set_divergence_available(True, "")

    def request_divergence(self) -> None:
        a, b = self.compared
        runs = self.keeper.session.runs
        if a is None or b is None:
            return
        base, other = runs[a], runs[b]
        # Teacher-forced on the baseline's tokens: what the other run's interventions change there.
        job = self.controller.submit(DivergenceRequest(
            tuple(base.token_ids), normalize_head_mask(base.started.head_mask),
            normalize_head_mask(other.started.head_mask), tuple(base.started.hidden_positions),
            tuple(other.started.hidden_positions)))
        self.controller.spawn(self._show_divergence(job))

    async def _show_divergence(self, job) -> None:
        end = await self.controller.wait(job)
        if end.reason == "done":
            self.v.compare.set_divergence(end.result)
        else:
            self.v.compare.set_divergence(None, end.message)

    # --- head importance --------------------------------------------------------------------------

    def update_availability(self) -> None:
        trace, info = self.presenter.trace, self.controller.model
        view = self.v.importance
        view.set_model_shape((trace.n_layers, trace.n_heads) if trace is not None else None)
        if trace is None or trace.finished is None:
            view.set_available(False, "Generate or open a run first: head importance ablates each "
                                      "head on the shown run's text.")
        elif not same_model(info, trace):
            view.set_available(False, f"Load {trace.started.model.label} ({trace.started.model.dtype}) "
                                      "to measure head importance on this run.")
        else:
            view.set_available(not self.controller.is_busy or bool(self.controller.jobs("head_importance")), "")
        ready = trace is not None and same_model(info, trace)
        idle = not self.controller.is_busy
        reason = ("" if ready else "Generate or open a run first." if trace is None else
                  f"Load {trace.started.model.label} ({trace.started.model.dtype}) to compute this on the shown run.")
        if ready and not idle:
            reason = "Wait for the running job to end (or stop it)."
        self.v.attribution.set_available(ready and idle, reason)
        self.v.patching.set_available(info is not None and idle,
                                      "Load a model first." if info is None else reason if not idle else "")

    def show_run_analyses(self) -> None:
        """What was computed on the shown run and kept with it: its latest head-importance map, its
        latest attribution, its latest patching."""
        trace = self.presenter.trace
        if not self.controller.jobs("head_importance"):  # else the map in view is the one being measured
            kept = trace.head_importances() if trace is not None else []
            self.v.importance.set_result(kept[-1] if kept else None)
        attributions = trace.attributions() if trace is not None else []
        if attributions:
            self.explain_token_quietly(*attributions[-1])
        else:
            self._attribution_position = None
            self.v.attribution.set_target(None)
            self.v.attribution.set_result(None)
            self.v.output.set_attribution(None, None)
        patchings = trace.patchings() if trace is not None else []
        if patchings and not self.controller.jobs("patching"):
            result = patchings[-1]
            self.v.patching.set_result(result, trace.pieces[:trace.n_prompt],
                                       trace.known_pieces().get(result.target_id, f"#{result.target_id}"))

    def explain_token_quietly(self, position: int, result) -> None:
        """Show a kept attribution without switching tabs."""
        trace = self.presenter.trace
        current = self.v.tabs.currentWidget()
        self.explain_token(position)
        self.v.tabs.setCurrentWidget(current)
        self._show_attribution(trace, position, result)

    def start_importance(self, scale: float) -> None:
        trace = self.presenter.trace
        if (trace is None or trace.finished is None or not same_model(self.controller.model, trace)
                or self.controller.is_busy):
            self.update_availability()
            return
        # Measured on the run as it was made: its own head mask and hidden tokens stay in place.
        request = HeadImportanceRequest(tuple(trace.token_ids), trace.n_prompt, scale,
                                        normalize_head_mask(trace.started.head_mask),
                                        tuple(trace.started.hidden_positions))
        job = self.controller.submit(request, origin=trace, on_events=self._on_importance_events)
        self.v.importance.set_running(True)
        self.controller.spawn(self._show_importance(job))

    def _on_importance_events(self, events: list) -> None:
        progress = [e for e in events if isinstance(e, JobProgress)]
        if progress:
            self.v.importance.set_progress(progress[-1].done, progress[-1].total)

    async def _show_importance(self, job) -> None:
        end = await self.controller.wait(job)
        self.v.importance.set_running(False)
        if end.result is not None:
            self.v.importance.set_result(end.result)  # partial when stopped
            trace = job.origin
            if trace in self.keeper.session.runs:
                trace.add_head_importance(end.result)  # kept with the run, saved with the session
                self.keeper.set_modified(True)
        if end.reason == "error":
            self.v.banner.show_error(end.message, end.details)
        self.update_availability()

    def stop_importance(self) -> None:
        self.controller.stop_all(["head_importance"])

    # --- why this token? (attribution) -------------------------------------------------------------

    def explain_token(self, position: int) -> None:
        """Choose the token at `position` of the shown run for attribution, and bring its view up."""
        trace = self.presenter.trace
        if trace is None or not 1 <= position < trace.length:
            return
        self._attribution_position = position
        known = trace.known_pieces()
        alternatives = [(int(i), known.get(int(i), f"#{int(i)}")) for i in trace.top_ids[position]
                        if int(i) != trace.token_ids[position]][:8]
        self.v.attribution.set_target(position, trace.pieces[position], alternatives,
                                      float(trace.logprob[position]))
        if position > trace.n_prompt and not self.v.output.show_prompt():
            self.v.show_prompt_action.setChecked(True)  # the prompt's tokens get shaded too
            self.v.output.set_show_prompt(True)
        kept = dict(trace.attributions())
        self._show_attribution(trace, position, kept.get(position))
        self.update_availability()
        self.v.tabs.setCurrentWidget(self.v.attribution)

    def _show_attribution(self, trace, position: int, result) -> None:
        self.v.attribution.set_result(result, trace.pieces[:position] if result is not None else None)
        self.v.output.set_attribution(None if result is None else dict(enumerate(result.scores.tolist())),
                                      position if result is not None else None)

    def start_attribution(self, method: str, steps: int, alternative) -> None:
        trace, position = self.presenter.trace, self._attribution_position
        if trace is None or position is None or self.controller.is_busy or not same_model(self.controller.model, trace):
            self.update_availability()
            return
        index = position - trace.n_prompt
        mask = trace.head_mask_at(index) if index >= 0 else trace.started.head_mask  # the mask it was made under
        request = AttributionRequest(tuple(trace.token_ids[:position]), trace.token_ids[position], method, steps,
                                     alternative, normalize_head_mask(mask),
                                     tuple(p for p in trace.started.hidden_positions if p < position))
        job = self.controller.submit(request, origin=(trace, position), on_events=self._on_attribution_events)
        self.v.attribution.set_running(True)
        self.controller.spawn(self._keep_attribution(job))

    def _on_attribution_events(self, events: list) -> None:
        progress = [e for e in events if isinstance(e, JobProgress)]
        if progress:
            self.v.attribution.set_progress(progress[-1].done, progress[-1].total)

    async def _keep_attribution(self, job) -> None:
        end = await self.controller.wait(job)
        self.v.attribution.set_running(False)
        trace, position = job.origin
        if end.reason == "done" and trace in self.keeper.session.runs:
            trace.add_attribution(end.result, position)
            self.keeper.set_modified(True)
            if trace is self.presenter.trace and position == self._attribution_position:
                self._show_attribution(trace, position, end.result)
        elif end.reason == "error":
            self.v.attribution.set_message(end.message)
            self.v.banner.show_error(end.message, end.details)
        else:
            self.v.attribution.set_message("Stopped.")
        self.update_availability()

    def stop_attribution(self) -> None:
        self.controller.stop_all(["attribution"])

    # --- where does the fact live? (activation patching) -------------------------------------------

    def refresh_patching_choices(self) -> None:
        if self.v.tabs.currentWidget() is self.v.patching:
            self.v.patching.set_choices([run_title(i, t) for i, t in enumerate(self.keeper.session.runs)])

    def start_patching(self, clean_index: int, corrupt_index: int, target_text: str, heads: bool) -> None:
        runs = self.keeper.session.runs
        if not (0 <= clean_index < len(runs) and 0 <= corrupt_index < len(runs)) or self.controller.is_busy:
            return
        clean, corrupt = runs[clean_index], runs[corrupt_index]
        problem = self._patching_problem(clean, corrupt, clean_index, corrupt_index)
        if problem:
            self.v.patching.set_message(problem)
            return
        target_id = None
        if not target_text:
            if clean.n_generated == 0:
                self.v.patching.set_message(f"Run #{clean_index + 1} generated nothing: type a target token.")
                return
            target_id = clean.token_ids[clean.n_prompt]  # the token the clean run went on with
        request = PatchingRequest(tuple(clean.token_ids[:clean.n_prompt]), tuple(corrupt.token_ids[:corrupt.n_prompt]),
                                  target_id, heads, normalize_head_mask(clean.started.head_mask),
                                  tuple(clean.started.hidden_positions), target_text or None)
        job = self.controller.submit(request, origin=(clean, f"#{corrupt_index + 1}"),
                                     on_events=self._on_patching_events)
        self.v.patching.set_running(True)
        self.controller.spawn(self._keep_patching(job))

    def _patching_problem(self, clean, corrupt, i: int, j: int) -> str:
        if i == j:
            return "Choose two different runs: a clean one and a corrupted one."
        if clean.n_prompt != corrupt.n_prompt:
            return (f"The clean prompt is {clean.n_prompt} tokens long and the corrupted one {corrupt.n_prompt}: "
                    "patching needs prompts of the same length.")
        if not same_model(self.controller.model, clean) or not compare_runs(clean, corrupt).same_model:
            return f"Both runs must be of the loaded model: load {clean.started.model.label} first."
        return ""

    def _on_patching_events(self, events: list) -> None:
        progress = [e for e in events if isinstance(e, JobProgress)]
        if progress:
            self.v.patching.set_progress(progress[-1].done, progress[-1].total)

    async def _keep_patching(self, job) -> None:
        end = await self.controller.wait(job)
        self.v.patching.set_running(False)
        clean, corrupt_label = job.origin
        if end.reason == "done":
            result = end.result
            if clean in self.keeper.session.runs:
                clean.add_patching(result, corrupt_label)
                self.keeper.set_modified(True)
            known = clean.known_pieces()
            self.v.patching.set_result(result, clean.pieces[:clean.n_prompt],
                                       known.get(result.target_id, f"#{result.target_id}"))
        elif end.reason == "error":
            self.v.patching.set_message(end.message)
        else:
            self.v.patching.set_message("Stopped.")
        self.update_availability()

    def stop_patching(self) -> None:
        self.controller.stop_all(["patching"])

    def show_head(self, layer: int, head: int) -> None:
        self.v.tabs.setCurrentWidget(self.v.inspector)
        self.v.inspector.tabs.setCurrentWidget(self.v.inspector.attention)
        self.v.inspector.attention.show_head(layer, head)
