"""One head's attention matrix for a run whose full rows stayed with its engine on a server: asked of
the engine when the attention view shows that head, computed there (HeadRowsRequest), and shown."""

from __future__ import annotations

from ...engine.messages.requests import HeadRowsRequest
from ..run_commands import same_model
from ..widgets.head_mask_editor import head_label
from .part import AnalysisPart
from .runner import Runner


class HeadRowsAnalysis(AnalysisPart):
    def __init__(self, *parts):
        super().__init__(*parts)
        self.view = self.v.inspector.attention
        # The head shown now: a newer choice replaces the one on its way.
        self.runner = Runner(self.controller, on_done=self._keep)
        self.view.matrix_requested.connect(self.request)

    def request(self, layer: int, head: int) -> None:
        trace = self.presenter.trace
        if trace is None:
            return
        if not same_model(self.controller.model, trace):
            self.view.matrix.plot.setTitle(f"{head_label(layer, head)}: its weights need this run's model: load "
                                           f"{trace.started.model.label} ({trace.started.model.dtype})")
            return
        ask = trace.lens_request()  # its tokens and its own interventions
        self.runner.start(HeadRowsRequest(ask["token_ids"], layer, head, ask["hidden_positions"], ask["mask_schedule"]),
                          origin=(trace, layer, head))

    def _keep(self, rows, origin) -> None:
        trace, layer, head = origin
        if trace is self.presenter.trace:
            self.view.set_fetched_matrix(layer, head, trace.length, rows)
