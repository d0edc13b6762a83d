"""Where does the fact live? Activation patching from a clean run's prompt into a corrupted run's prompt
of the same token length, both runs of the session; the result is kept with the clean run."""

from __future__ import annotations

from collections import Counter

from ...engine.messages.interventions_spec import normalize_head_mask
from ...engine.messages.requests import PatchingRequest
from ...session.compare import compare_runs
from ...session.describe import run_title
from ..run_commands import same_model
from .part import TabAnalysis

NEEDS_TWO = ("Patching needs two runs whose prompts have the same number of tokens: a clean one (\"The Eiffel "
             "Tower is in\") and a corrupted one (\"The Colosseum is in\").")


class PatchingAnalysis(TabAnalysis):
    VIEW = "patching"

    def availability(self) -> tuple[bool, str]:
        runs = self.keeper.session.runs
        if self.controller.model is None:
            return False, "Load a model first."
        if self.controller.is_busy:  # perhaps the second run being made
            return False, "Wait for the running job to end (or stop it)."
        if len(runs) < 2:
            return False, f"{NEEDS_TWO} This session has {len(runs)}: generate another."
        if max(Counter(t.n_prompt for t in runs).values()) < 2:
            return False, f"{NEEDS_TWO} No two prompts of this session have the same length."
        return True, ""

    def update_availability(self) -> None:
        self.view.set_available(*self.availability())

    def refresh_choices(self) -> None:
        if self.v.tabs.currentWidget() is self.view:
            self.view.set_choices([run_title(i, t) for i, t in enumerate(self.keeper.session.runs)])

    def show_kept(self, trace) -> None:
        """The latest patching kept with the shown run, unless one is being computed."""
        patchings = trace.patchings() if trace is not None else []
        if patchings and not self.runner.running:
            self._show(trace, patchings[-1])

    def start(self, clean_index: int, corrupt_index: int, target_text: str, heads: bool) -> None:
        runs = self.keeper.session.runs
        if not (0 <= clean_index < len(runs) and 0 <= corrupt_index < len(runs)) or not self.availability()[0]:
            return
        clean, corrupt = runs[clean_index], runs[corrupt_index]
        problem = self._problem(clean, corrupt, clean_index, corrupt_index)
        if problem:
            self.view.set_message(problem)
            return
        target_id = None
        if not target_text:
            if clean.n_generated == 0:
                self.view.set_message(f"Run #{clean_index + 1} generated nothing: type a target token.")
                return
            target_id = clean.token_ids[clean.n_prompt]  # the token the clean run went on with
        request = PatchingRequest(tuple(clean.token_ids[:clean.n_prompt]), tuple(corrupt.token_ids[:corrupt.n_prompt]),
                                  target_id, heads, normalize_head_mask(clean.started.head_mask),
                                  tuple(clean.started.hidden_positions), target_text or None)
        self.runner.start(request, origin=(clean, f"#{corrupt_index + 1}"))

    def _problem(self, clean, corrupt, i: int, j: int) -> str:
        if i == j:
            return "Choose two different runs: a clean one and a corrupted one."
        if clean.n_prompt != corrupt.n_prompt:
            return (f"The clean prompt is {clean.n_prompt} tokens long and the corrupted one {corrupt.n_prompt}: "
                    "patching needs prompts of the same length.")
        if not same_model(self.controller.model, clean) or not compare_runs(clean, corrupt).same_model:
            return f"Both runs must be of the loaded model: load {clean.started.model.label} first."
        return ""

    def _keep(self, result, origin) -> None:
        clean, corrupt_label = origin
        if clean in self.keeper.session.runs:
            clean.add_patching(result, corrupt_label)
            self.keeper.set_modified(True)
        self._show(clean, result)

    def _show(self, clean, result) -> None:
        target = clean.known_pieces().get(result.target_id, f"#{result.target_id}")
        self.view.set_result(result, clean.pieces[:clean.n_prompt], target)
