"""Why this token? Attribution of a token of the shown run to the tokens before it, started from the
Output view's menu or the tab's own button, kept with the run and shaded in the Output view."""

from __future__ import annotations

from ...engine.messages.interventions_spec import normalize_head_mask
from ...engine.messages.requests import AttributionRequest
from ..run_commands import same_model
from .part import TabAnalysis

MAX_ALTERNATIVES = 8  # "its logit minus …'s" choices offered in the view


class AttributionAnalysis(TabAnalysis):
    VIEW = "attribution"

    def __init__(self, *parts):
        super().__init__(*parts)
        self.position: int | None = None  # the token of the shown run the tab explains
        self.v.output.explain_requested.connect(self.explain_token)
        self.view.position_clicked.connect(self.v.output.set_selected)

    def availability(self) -> tuple[bool, str]:
        trace, idle = self.presenter.trace, not self.controller.is_busy
        if trace is None:
            return False, "Generate or open a run first."
        if not same_model(self.controller.model, trace):
            return False, (f"Load {trace.started.model.label} ({trace.started.model.dtype}) to compute this "
                           "on the shown run.")
        return (True, "") if idle else (False, "Wait for the running job to end (or stop it).")

    def update_availability(self) -> None:
        self.view.set_available(*self.availability())

    def show_kept(self, trace) -> None:
        """The latest attribution kept with the shown run, without switching tabs; else an empty chart."""
        if self.runner.running and self.runner.origin[0] is trace:
            return  # the token being explained is of this run: it stays in view
        kept = trace.attributions() if trace is not None else []
        if kept:
            self.choose(*kept[-1])
            return
        self.runner.cancel()  # it explained a token of another run
        self.position = None
        self.view.set_target(None)
        self.view.set_result(None)
        self.v.output.set_attribution(None, None)

    def explain_token(self, position: int) -> None:
        """"Why this token?": choose the token at `position` of the shown run, bring the tab up, and show
        its kept attribution, or compute one with the tab's method when the model is there to do it."""
        trace = self.presenter.trace
        if trace is None or not 1 <= position < trace.length:
            return
        kept = dict(trace.attributions()).get(position)
        self.choose(position, kept)
        if position > trace.n_prompt and not self.v.output.show_prompt():
            self.v.show_prompt_action.setChecked(True)  # the prompt's tokens get shaded too
            self.v.output.set_show_prompt(True)
        self.v.tabs.setCurrentWidget(self.view)
        if kept is None and self.availability()[0]:
            self.view.request()

    def choose(self, position: int, result) -> None:
        """Make the token at `position` the tab's target and show `result` (None: not computed yet)."""
        trace = self.presenter.trace
        self.runner.cancel()  # it explained another token
        self.position = position
        known = trace.known_pieces()
        alternatives = [(int(i), known.get(int(i), f"#{int(i)}")) for i in trace.top_ids[position]
                        if int(i) != trace.token_ids[position]][:MAX_ALTERNATIVES]
        self.view.set_target(position, trace.pieces[position], alternatives, float(trace.logprob[position]))
        self._show(trace, position, result)
        self.update_availability()

    def _show(self, trace, position: int, result) -> None:
        self.view.set_result(result, trace.pieces[:position] if result is not None else None)
        self.v.output.set_attribution(None if result is None else dict(enumerate(result.scores.tolist())),
                                      position if result is not None else None)

    def start(self, method: str, steps: int, alternative) -> None:
        trace, position = self.presenter.trace, self.position
        if trace is None or position is None or not self.availability()[0]:
            self.update_availability()
            return
        index = position - trace.n_prompt
        mask = trace.head_mask_at(index) if index >= 0 else trace.started.head_mask  # the mask it was made under
        request = AttributionRequest(tuple(trace.token_ids[:position]), trace.token_ids[position], method, steps,
                                     alternative, normalize_head_mask(mask),
                                     tuple(p for p in trace.started.hidden_positions if p < position))
        self.runner.start(request, origin=(trace, position))

    def _keep(self, result, origin) -> None:
        trace, position = origin
        if trace in self.keeper.session.runs:
            trace.add_attribution(result, position)
            self.keeper.set_modified(True)
        self._show(trace, position, result)
