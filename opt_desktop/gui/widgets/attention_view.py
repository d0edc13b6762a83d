"""Attention: a layers × heads grid of one statistic at the selected token, and, when the run kept
full attention rows, the whole attention matrix of one head.

Layers and heads count from 0, as `model.model.decoder.layers[i]` does: the cell in row l, column h
is head h of decoder layer l, named "L{l}H{h}" as in the CLI, the exports and the session files.

The grid also edits the head mask for the next run (attention_mask_editing.py): right-click a head,
a layer number or a head number for the mask menu, or turn on "Edit head mask" and click. Masked
heads are hatched.

Above the grid, the heads this run marks as previous-token, induction and sink heads (P, I, S on the
grid; session/head_roles.py): a click on one selects it.
"""

from __future__ import annotations

import time

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QHBoxLayout, QLabel, QSpinBox, QVBoxLayout, QWidget,
)

from ...session.head_roles import ROLE_DEFINITIONS, ROLE_NAMES, ROLES, RoleScores, per_query, role_scores
from ...session.trace import RunTrace
from ..colors import follow_palette
from .head_mask_editor import (
    HeadMaskBar, HeadMaskOverlay, MaskDict, head_cell_name, head_label,
)
from .attention_mask_editing import HeadMaskEditing
from .head_roles_bar import HeadRoleMarks, HeadRolesBar, score_grid
from .heatmap import Axis, FittedTitle, Heatmap
from .hidden_view import token_name
from .splitter import splitter
from .stat_box import StatBox

STATS = (("entropy", "entropy (nats)"), ("sink", "sink weight (key 0)"), ("distance", "mean distance (tokens)"),
         ("previous", "previous-token weight"), ("induction", "induction weight"),
         *((f"score:{r}", f"{ROLE_NAMES[r]} score (whole run)") for r in ROLES))
STAT_TIPS = {
    "entropy": "Entropy of the head's weights over keys 0..t, in nats: low = focused, high = spread out",
    "sink": "Weight the head puts on key 0 (the leading </s>), the 'attention sink'",
    "distance": "Average distance back to the attended keys: Σ w_k (t − k)",
    "previous": "Weight the head puts on the previous token, key t − 1",
    "induction": "Weight the head puts on the tokens that followed earlier copies of this token: Σ w_(j+1) over "
                 "the earlier positions j < t − 1 holding the same token (none when it has not occurred before)",
    **{f"score:{r}": f"The run's {ROLE_NAMES[r]} score of each head, the one heads are named by: the "
                     f"{ROLE_DEFINITIONS[r]}" for r in ROLES},
}
# Fractions of the attention (and their means): shown on a fixed 0..1 scale.
WEIGHTS = ("sink", "previous", "induction", *(f"score:{r}" for r in ROLES))
NO_ROWS = ("To see a head's full attention matrix beside the grid, turn on “keep full attention rows” "
           "before generating.")
GRID_HINT = "Click a head: its matrix. Right-click: mask it."
GRID_HINT_NO_ROWS = "Hover a head to read it. Right-click: mask it."
GRID_HINT_TIP = ("Hover a head to read its value. Click a head to show its full attention matrix (when the run kept "
                 "full attention rows). Right-click a head, a layer number or a head number to mask heads for "
                 "the next run.")
MATRIX_MIN_INTERVAL_S = 0.25  # building a T × T matrix is O(T²): don't redo it on every token



class AttentionView(HeadMaskEditing, QWidget):
    position_selected = Signal(int)
    # (layer, head): a finished run whose full rows stayed with its engine (a server) wants that matrix
    matrix_requested = Signal(int, int)
    head_mask_changed = Signal(object)  # tuple[HeadScale, ...] sorted by (layer, head): the user edited the mask

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._trace: RunTrace | None = None
        self._fetched = self._asked = None  # see set_trace
        self._pos: int | None = None
        self._mask: MaskDict = {}
        self._matrix_key: tuple[int, int, int] | None = None  # (layer, head, T) shown
        self._matrix_time = 0.0
        self._matrix_timer = QTimer(self, singleShot=True)
        self._matrix_timer.timeout.connect(lambda: self._update_matrix(force=True))
        self._roles: RoleScores | None = None
        self._roles_key: tuple | None = None  # (trace, length, fed positions) the roles were scored at
        self._picked: tuple[int, int] | None = None  # the head last clicked (outlined without full rows)

        self.stats = StatBox(STATS, STAT_TIPS)
        self.stats.changed.connect(self._on_stat_changed)
        self.mask_bar = HeadMaskBar()
        self.mask_bar.edit_button.toggled.connect(self._on_edit_toggled)
        self.mask_bar.clear_button.clicked.connect(self.clear_head_mask)
        bar = QHBoxLayout()
        bar.addWidget(self.stats)
        bar.addSpacing(16)
        bar.addWidget(self.mask_bar, 1)
        self.roles_bar = HeadRolesBar()
        self.roles_bar.head_clicked.connect(self._on_role_clicked)

        # Left: every head at the selected token.
        self.grid_caption = QLabel()
        self.grid_caption.setWordWrap(True)
        self.grid_caption.setTextFormat(Qt.TextFormat.PlainText)  # it quotes a token
        self.grid = Heatmap(Axis("layer"), Axis("head"), cell_name=self._cell_name, hint=GRID_HINT)
        self.grid.readout.setToolTip(GRID_HINT_TIP)
        self.grid.cell_clicked.connect(self._on_grid_clicked)
        self.grid.plot.scene().sigMouseClicked.connect(self._on_grid_scene_clicked)
        self.mask_overlay = HeadMaskOverlay()
        self.grid.plot.addItem(self.mask_overlay, ignoreBounds=True)
        self.role_marks = HeadRoleMarks()
        self.grid.plot.addItem(self.role_marks, ignoreBounds=True)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.grid_caption)
        ll.addWidget(self.grid, 1)

        # Right: one head's full matrix, when the run kept full attention rows.
        self.layer_spin = QSpinBox(prefix="layer ", minimum=0, maximum=0)
        self.head_spin = QSpinBox(prefix="head ", minimum=0, maximum=0)
        self.layer_spin.valueChanged.connect(lambda _v: self._update_matrix(force=True))
        self.head_spin.valueChanged.connect(lambda _v: self._update_matrix(force=True))
        pick = QHBoxLayout()
        pick.addWidget(QLabel("Attention weights of"))
        pick.addWidget(self.layer_spin)
        pick.addWidget(self.head_spin)
        pick.addStretch(1)
        self.matrix = Heatmap(Axis("query"), Axis("key"),
                              hint="Rows: query tokens, columns: the keys they attend to. Click a row to select it.")
        self.matrix.set_colorbar_label("weight")
        self.matrix_title = FittedTitle(self.matrix.plot)  # names the head's roles: cut short, not past the edge
        self.matrix.cell_clicked.connect(lambda row, _col: self.position_selected.emit(row))
        matrix_panel = QWidget()
        ml = QVBoxLayout(matrix_panel)
        ml.setContentsMargins(0, 0, 0, 0)
        ml.addLayout(pick)
        ml.addWidget(self.matrix, 1)
        self.right = self._matrix_panel = matrix_panel
        # Without full rows the grid takes the whole width and one line says how to get the matrix,
        # instead of a large panel holding only that sentence beside a small grid.
        self.no_rows_label = QLabel(NO_ROWS)
        self.no_rows_label.setWordWrap(True)
        self.no_rows_label.setTextFormat(Qt.TextFormat.PlainText)
        self.no_rows_label.setEnabled(False)  # drawn in the muted text colour: a note, not content

        # Grid and matrix share the width; the divider moves either way.
        split = self.split = splitter(Qt.Orientation.Horizontal, (left, 1), (self.right, 1), sizes=(500, 500))

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.roles_bar)
        layout.addWidget(split, 1)
        layout.addWidget(self.no_rows_label)
        self._on_stat_changed()
        self._show_mask()
        follow_palette(self, self._apply_palette)
        self._apply_palette()

    # --- inputs --------------------------------------------------------------------------------

    @property
    def showing_matrix(self) -> bool:
        return not self._matrix_panel.isHidden()

    def set_trace(self, trace: RunTrace | None) -> None:
        self._trace = trace
        self._matrix_key = None
        self._fetched = None  # (layer, head, length, matrix) computed by the engine for this run
        self._asked = None  # the (layer, head, length) asked for
        self._roles_key = None
        if trace is not None:
            self.layer_spin.setMaximum(trace.n_layers - 1)
            self.head_spin.setMaximum(trace.n_heads - 1)
        name = lambda i: token_name(self._trace, i)  # noqa: E731
        self.matrix.set_axes(Axis("query", name=lambda i: "query " + name(i)),
                             Axis("key", name=lambda i: "key " + name(i)))
        self.mask_bar.show_mask(self._mask, *self._model_shape())  # "3:*" needs the model's head count
        self.refresh()

    def set_position(self, pos: int | None) -> None:
        self._pos = pos
        self._update_grid()
        self.matrix.set_highlight(row=pos)

    def refresh(self, force: bool = False) -> None:
        """Re-read the trace; `force` redraws the matrix now even if it was drawn a moment ago."""
        self._update_roles()
        self._update_grid()
        self._update_matrix(force)

    # --- grid ----------------------------------------------------------------------------------

    def _on_stat_changed(self) -> None:
        self.grid.set_colorbar_label(self.stats.label())
        # Weights are fractions of the attention: a fixed 0..1 scale reads the same at every token.
        self.grid.set_fixed_levels((0.0, 1.0) if self.stats.stat in WEIGHTS else None)
        self._update_grid()

    def _update_grid(self) -> None:
        t, pos, stat = self._trace, self._pos, self.stats.stat
        if t is not None and stat.startswith("score:"):  # the whole run's, at no one token
            values, caption = score_grid(self._roles, stat.removeprefix("score:"), (t.n_layers, t.n_heads))
            self.grid.set_data(values)
            self._place_overlay()
            self.grid_caption.setText(caption)
            return
        if t is None or pos is None or not (0 <= pos < t.length):
            self.grid.clear()
            self._place_overlay()
            self.grid_caption.setText("Select a token to see its attention heads.")
            return
        per_query_values = per_query(t, stat)
        values = (np.full((t.n_layers, t.n_heads), np.nan, np.float32) if per_query_values is None
                  else per_query_values[:, :, pos])
        self.grid.set_data(values)
        if self.mask_overlay.grid_shape != values.shape:
            self._place_overlay()  # the grid's shape changed (a new model): re-fit the marks
        fed = np.isfinite(t.attention("sink")[:, :, pos]).any()
        if per_query_values is None:
            self.grid_caption.setText(f"This run's file has no {self.stats.label()} (saved by an earlier OPT Desktop "
                                      "without full attention rows).")
        elif not fed:
            self.grid_caption.setText(f"{token_name(t, pos)} was never fed to the model: no attention yet.")
        elif np.isnan(values).all():
            why = "is the first token" if stat == "previous" else "has not occurred before (or only just before)"
            self.grid_caption.setText(f"No {self.stats.label()} at {token_name(t, pos)}: it {why}.")
        else:
            self.grid_caption.setText(f"{self.stats.label()} of each head at {token_name(t, pos)}")

    # --- head roles ----------------------------------------------------------------------------

    def _update_roles(self) -> None:
        """Score the run's heads again when it has grown (a cheap key: its length and fed positions)."""
        t = self._trace
        if t is None:
            self._roles, self._roles_key = None, None
            self.roles_bar.hide()
            self.role_marks.set_marks(None, (0, 0))
            return
        key = (id(t), t.length, int(np.isfinite(t.attention("sink")[0, 0]).sum()), t.missing_attention)
        if key != self._roles_key:
            self._roles_key = key
            self._roles = role_scores(t)
            self.roles_bar.show_scores(self._roles, captured=bool(t.started.inspect.get("attention_stats", True)))
        self.roles_bar.show()
        self.role_marks.set_marks(self._roles, (t.n_layers, t.n_heads))

    def roles(self) -> RoleScores | None:
        """The shown run's head-role scores (None before its attention statistics arrive)."""
        return self._roles

    def _cell_name(self, layer: int, head: int) -> str:
        """The grid's read-out names a marked head's roles: "L1H0 (layer 1, head 0), induction head (0.97)"."""
        return head_cell_name(layer, head) + self._roles_text(layer, head)

    def _roles_text(self, layer: int, head: int) -> str:
        """", induction head (0.97)" for each role the head is marked for; "" for none."""
        roles = self._roles.roles_of(layer, head) if self._roles is not None else []
        return "".join(f", {ROLE_NAMES[m.role]} head ({m.score:.2f})" for m in roles)

    def _on_role_clicked(self, role: str, layer: int, head: int) -> None:
        """A head in the roles list: show the score it is named by, and select it."""
        self.stats.set_stat(f"score:{role}")
        self.show_head(layer, head)

    def _on_grid_clicked(self, row: int, col: int) -> None:
        if self.mask_bar.editing:
            self.toggle_heads(self._cells(("head", row, col)))
            return
        self.show_head(row, col)

    def show_head(self, layer: int, head: int) -> None:
        """Pick the head whose full attention matrix is shown."""
        self._picked = (layer, head)
        self.layer_spin.setValue(layer)
        self.head_spin.setValue(head)
        self._update_matrix(force=True)

    def _apply_palette(self) -> None:
        palette = self.palette()
        self.mask_overlay.set_colors(palette.color(QPalette.ColorRole.Text), palette.color(QPalette.ColorRole.Base))
        self.role_marks.set_colors(palette.color(QPalette.ColorRole.Text), palette.color(QPalette.ColorRole.Base))

    # --- full matrix ---------------------------------------------------------------------------

    def set_fetched_matrix(self, layer: int, head: int, length: int, matrix) -> None:
        """One head's matrix computed where the run's model is (for a run whose rows stayed there)."""
        self._fetched = (layer, head, length, matrix)
        self._matrix_key = None
        self._update_matrix(force=True)

    def _rows_elsewhere(self, t: RunTrace) -> bool:
        """The run's full rows stayed with the engine that made it (a server): one head's is asked for."""
        return not t.has_attention_rows and bool(t.started.inspect.get("rows_on_demand"))

    def _update_matrix(self, force: bool = False) -> None:
        t = self._trace
        if t is not None and self._rows_elsewhere(t):
            self._update_fetched_matrix(t)
            return
        if t is None or not t.has_attention_rows:
            self.grid.set_hint(GRID_HINT_NO_ROWS)
            self._matrix_panel.hide()
            self.no_rows_label.setText(NO_ROWS)
            self.no_rows_label.setVisible(t is not None)
            self.matrix.clear()
            self.matrix_title.set("")
            self.grid.set_highlight(*(self._picked or (None, None)))  # the head clicked last
            self._matrix_key = None
            return
        self.grid.set_hint(GRID_HINT)
        self._matrix_panel.show()
        self.no_rows_label.hide()
        layer, head = self.matrix_layer_head()
        self.grid.set_highlight(row=layer, col=head)  # which head the matrix shows
        # "Attention weights of" beside the spin boxes says the rest: a role is what may not fit.
        self.matrix_title.set(head_label(layer, head) + self._roles_text(layer, head))
        key = (layer, head, t.length)
        if key == self._matrix_key:
            return
        wait = MATRIX_MIN_INTERVAL_S - (time.monotonic() - self._matrix_time)
        if not force and self._matrix_key is not None and wait > 0:
            if not self._matrix_timer.isActive():
                self._matrix_timer.start(int(wait * 1000) + 1)  # the last token still gets drawn
            return
        self._matrix_timer.stop()
        self.matrix.set_data(t.attention_matrix(layer, head))
        self.matrix.set_highlight(row=self._pos)
        self._matrix_key = key
        self._matrix_time = time.monotonic()

    def _update_fetched_matrix(self, t: RunTrace) -> None:
        self.grid.set_hint(GRID_HINT)
        self._matrix_panel.show()
        self.no_rows_label.hide()
        layer, head = self.matrix_layer_head()
        self.grid.set_highlight(row=layer, col=head)
        key = (layer, head, t.length)
        fetched = self._fetched
        if fetched is not None and fetched[:3] == key:
            if self._matrix_key != key:
                self.matrix.plot.setTitle(f"{head_label(layer, head)}: attention weights")
                self.matrix.set_data(fetched[3])
                self.matrix.set_highlight(row=self._pos)
                self._matrix_key = key
            return
        self.matrix.clear()
        self._matrix_key = None
        if t.finished is None:
            self.matrix.plot.setTitle(f"{head_label(layer, head)}: its weights come from the server once the run ends")
        elif self._asked != key:
            self._asked = key
            self.matrix.plot.setTitle(f"{head_label(layer, head)}: computing its weights where the model is…")
            self.matrix_requested.emit(layer, head)

    def matrix_layer_head(self) -> tuple[int, int]:
        """(layer, head) of the matrix shown: head `head` of `decoder.layers[layer]`."""
        return self.layer_spin.value(), self.head_spin.value()

