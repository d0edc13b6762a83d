"""Where did this token's information come from? The information-flow routes of the shown run.

One column per position (its token underneath), one row of nodes per layer from the embeddings at
the bottom to the last layer at the top; an edge from (layer l, position s) to (l + 1, t) is what
layer l's attention moved from s into t, as wide as its share. Edges under the threshold are hidden
and the rest renormalised per node. Clicking a token (here, or choosing it in the Inspector) keeps
only the routes into it, traced back to the input tokens; clicking it again shows them all.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QStackedWidget, QVBoxLayout, QWidget

from ...engine.messages.results import Routes
from ...session.route_graph import DEFAULT_THRESHOLD, RouteGraph
from ..rich_text import plain_tip
from .job_controls import JobControls
from .routes_plot import RoutesPlot
from .setting_slider import SettingSlider

EXPLANATION = ("Each blue line is what one layer's attention moved from one position (bottom) to a later one (top), "
               "as wide as its share of what that node was built from; a grey upright line is what a position kept "
               "of itself (its residual, and its heads' attention to itself); the red square on a node is its MLP's "
               "share. Click a token for the routes into it. Wheel: zoom; drag: pan.")
PLACEHOLDER = ("The routes of the shown run are drawn here once computed: one column per token, one row of nodes "
               "per layer from the embeddings up, and a line for what each layer's attention moved from one "
               "position to another. They are computed when this tab is in view and the run's model is loaded "
               "and idle, and kept with the run.")


class RoutesView(JobControls, QWidget):
    run_requested = Signal()
    stop_requested = Signal()
    position_clicked = Signal(int)  # a token chosen here, for the other views to follow
    RUNNING_TEXT = "Computing the routes of every token…"
    IDLE_TEXT = ""  # the explanation stays in the readout under the graph

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.graph: RouteGraph | None = None
        self.position: int | None = None
        self._pieces: list[str] = []
        self._make_job_controls("Compute routes", "heads")
        self.run_button.setToolTip("Compute the routes of every token of the shown run (needs its model loaded)")

        self.target = QLabel()
        self.target.setTextFormat(Qt.TextFormat.PlainText)
        self.target.setWordWrap(True)
        self.threshold = SettingSlider(0.01, 0.5, step=0.01, decimals=2)
        self.threshold.set_value(DEFAULT_THRESHOLD)
        self.threshold.setToolTip("Hide the edges under this share; the rest are renormalised per node")
        self.threshold.edited.connect(self._redraw)
        self.all_button = QPushButton("All routes")
        self.all_button.setToolTip("Show the routes into every token again")
        self.all_button.clicked.connect(lambda: self.select_position(None))
        controls = QHBoxLayout()
        controls.addWidget(self.run_button)
        controls.addWidget(self.stop_button)
        controls.addWidget(self.progress, 1)
        controls.addWidget(QLabel("threshold"))
        controls.addWidget(self.threshold, 1)
        controls.addWidget(self.all_button)

        self.plot = RoutesPlot()
        self.plot.column_clicked.connect(self._on_column_clicked)
        self.placeholder = QLabel(PLACEHOLDER)  # instead of an empty plot, until there are routes to draw
        self.placeholder.setWordWrap(True)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setTextFormat(Qt.TextFormat.PlainText)
        self.placeholder.setContentsMargins(40, 0, 40, 0)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.placeholder)
        self.pages.addWidget(self.plot)
        self.readout = QLabel(EXPLANATION)
        self.readout.setTextFormat(Qt.TextFormat.PlainText)
        self.readout.setWordWrap(True)
        self.readout.setMinimumHeight(self.readout.fontMetrics().lineSpacing() * 2)
        self.plot.hovered.connect(lambda text: self.readout.setText(text or EXPLANATION))

        layout = QVBoxLayout(self)
        layout.addWidget(self.target)
        layout.addLayout(controls)
        layout.addWidget(self.status)
        layout.addWidget(self.pages, 1)
        layout.addWidget(self.readout)
        self.set_routes(None)

    # --- what to show ---------------------------------------------------------------------------------

    def set_routes(self, result: Routes | None, pieces: list[str] | None = None) -> None:
        """The routes of the shown run (`pieces[i]` the text of position i), or None."""
        self.graph = None if result is None else RouteGraph(result)
        self._pieces = list(pieces or [])
        if self.position is not None and (self.graph is None or self.position >= self.graph.n_positions):
            self.position = None
        self.plot.set_graph(self.graph, self._pieces)
        self.pages.setCurrentWidget(self.plot if self.graph is not None else self.placeholder)
        self.readout.setVisible(self.graph is not None)
        self._redraw()
        self._update_buttons()

    def select_position(self, position: int | None) -> None:
        """Keep only the routes into `position` (None: all of them)."""
        if position is not None and (self.graph is None or not 0 <= position < self.graph.n_positions):
            position = None
        self.position = position
        self._redraw()

    def _on_column_clicked(self, t: int) -> None:
        self.select_position(None if t == self.position else t)
        if self.position is not None:
            self.position_clicked.emit(self.position)

    def _redraw(self) -> None:
        threshold = float(self.threshold.value())
        self.all_button.setEnabled(self.position is not None)
        if self.graph is None:
            self.target.setText("Where each token's information came from, layer by layer.")
            return
        self.plot.show_edges(threshold, self.position)
        if self.position is None:
            self.target.setText(f"Routes into every token ({self.graph.n_positions} positions × "
                                f"{self.graph.n_layers} layers). Click a token to trace the routes into it.")
        else:
            t = self.position
            inputs = ", ".join(f"{i} {self._pieces[i]!r} {share:.0%}" for i, share in self.plot.traced.inputs(3))
            self.target.setText(f"Routes into position {t} {self._pieces[t]!r} at the last layer (what predicts "
                                f"the next token), traced back to the input tokens. Most of it comes from "
                                f"{inputs or 'no input token above the threshold'}.")

    # --- the job ----------------------------------------------------------------------------------------

    def set_running(self, running: bool) -> None:
        if not running and self.status.text() == self.RUNNING_TEXT:
            self.status.setText("")
        super().set_running(running)

    def request(self) -> None:
        self.run_requested.emit()

    def _update_buttons(self) -> None:
        ok, reason = self._available
        self.run_button.setEnabled(ok and not self._running)
        self.stop_button.setEnabled(self._running)
        self.progress.setVisible(self._running or self.graph is not None)  # no empty bar before the first job
        self.run_button.setToolTip(plain_tip(reason) if not ok and reason else
                                   "Compute the routes of every token of the shown run")
        if not ok and reason and not self._running and self.graph is None:
            self.status.setText(reason)
