"""The attention grid's head-mask editing: the right-click menu on a head, a layer number or a head
number, and the edit-mode clicks (a mixin of AttentionView, which holds the grid, the mask bar and
overlay, the mask being edited and the `head_mask_changed` signal)."""

from __future__ import annotations

from typing import Iterable

import numpy as np
from PySide6.QtCore import QPointF, Qt
from PySide6.QtWidgets import QInputDialog, QMenu

from ...engine.messages.settings import HeadScale
from .head_mask_editor import Cell, MaskDict, head_label, head_scales, mask_dict


# What a click on the grid points at: a head (layer, head), a whole layer (row number) or one head
# index in every layer (column number).
Target = tuple[str, int, int]  # ("head", layer, head) | ("layer", layer, -1) | ("index", -1, head)


class HeadMaskEditing:
    def head_mask(self) -> tuple[HeadScale, ...]:
        """The mask being edited, sorted by (layer, head), 0-based."""
        return head_scales(self._mask)

    def set_head_mask(self, mask: Iterable) -> None:
        """Show `mask` (HeadScale items or (layer, head, scale) tuples) as the one being edited; no signal."""
        self._mask = mask_dict(mask)
        self._show_mask()

    def mask_heads(self, cells: Iterable[Cell], scale: float) -> None:
        """Scale each (layer, head) by `scale` (1 unmasks)."""
        new = dict(self._mask)
        for cell in cells:
            if scale == 1.0:
                new.pop(cell, None)
            else:
                new[cell] = float(scale)
        self._commit(new)

    def unmask_heads(self, cells: Iterable[Cell]) -> None:
        self.mask_heads(cells, 1.0)

    def toggle_heads(self, cells: list[Cell]) -> None:
        """The edit-mode click: unmask when every cell already has the bar's scale, else apply it."""
        scale = self.mask_bar.scale
        if cells and all(self._mask.get(c, 1.0) == scale for c in cells):
            self.unmask_heads(cells)
        else:
            self.mask_heads(cells, scale)

    def clear_head_mask(self) -> None:
        self._commit({})

    def _commit(self, new: MaskDict) -> None:
        if new == self._mask:
            return
        self._mask = new
        self._show_mask()
        self.head_mask_changed.emit(self.head_mask())

    def _show_mask(self) -> None:
        self.mask_bar.show_mask(self._mask, *self._model_shape())
        self._place_overlay()

    def _place_overlay(self) -> None:
        self.mask_overlay.set_cells(self._mask, self.grid.data().shape)

    def _model_shape(self) -> tuple[int | None, int | None]:
        t = self._trace
        return (t.n_layers, t.n_heads) if t is not None else (None, None)

    def _cells(self, target: Target) -> list[Cell]:
        kind, layer, head = target
        n_layers, n_heads = (n or 0 for n in self._model_shape())
        if kind == "layer":
            return [(layer, h) for h in range(n_heads)]
        if kind == "index":
            return [(la, head) for la in range(n_layers)]
        return [(layer, head)]

    def _describe(self, target: Target) -> str:
        kind, layer, head = target
        if kind == "layer":
            return f"layer {layer}"
        if kind == "index":
            return f"head {head} in every layer"
        return f"head {head_label(layer, head)}"

    def target_at(self, scene_pos: QPointF) -> Target | None:
        """The head under a scene point, or the layer / head index whose axis number is under it."""
        cell = self.grid.cell_at(scene_pos)
        if cell is not None:
            return ("head", *cell)
        n_layers, n_heads = self.grid.data().shape
        item = self.grid.plot.getPlotItem()
        p = self.grid.view.mapSceneToView(scene_pos)
        row, col = int(np.floor(p.y() + 0.5)), int(np.floor(p.x() + 0.5))
        if item.getAxis("left").sceneBoundingRect().contains(scene_pos) and 0 <= row < n_layers:
            return ("layer", row, -1)
        if item.getAxis("bottom").sceneBoundingRect().contains(scene_pos) and 0 <= col < n_heads:
            return ("index", -1, col)
        return None

    def mask_menu(self, target: Target) -> QMenu:
        """The right-click menu for a head, a layer or a head index."""
        menu = QMenu(self)
        kind, layer, head = target
        targets = [target]
        if kind == "head":
            targets += [("layer", layer, -1), ("index", -1, head)]
        for t in targets:
            menu.addAction(f"Ablate {self._describe(t)}", lambda t=t: self.mask_heads(self._cells(t), 0.0))
        menu.addSeparator()
        for t in targets:
            menu.addAction(f"Scale {self._describe(t)}…", lambda t=t: self._ask_scale(t))
        menu.addSeparator()
        for t in targets:
            action = menu.addAction(f"Unmask {self._describe(t)}", lambda t=t: self.unmask_heads(self._cells(t)))
            action.setEnabled(any(c in self._mask for c in self._cells(t)))
        menu.addAction("Clear mask", self.clear_head_mask).setEnabled(bool(self._mask))
        return menu

    def _ask_scale(self, target: Target) -> None:
        cells = self._cells(target)
        current = self._mask.get(cells[0], self.mask_bar.scale) if len(cells) == 1 else self.mask_bar.scale
        scale, ok = QInputDialog.getDouble(
            self, "Scale heads", f"Scale the output of {self._describe(target)} by (0 removes it, 1 leaves it):",
            current, 0.0, 2.0, 2)
        if ok:
            self.mask_heads(cells, scale)

    def _on_grid_scene_clicked(self, event) -> None:
        target = self.target_at(event.scenePos())
        if target is None:
            return
        if event.button() == Qt.MouseButton.RightButton:
            event.accept()
            self.mask_menu(target).exec(event.screenPos().toPoint())
        elif event.button() == Qt.MouseButton.LeftButton and self.mask_bar.editing and target[0] != "head":
            self.toggle_heads(self._cells(target))  # head cells come through the heatmap's cell_clicked

    def _on_edit_toggled(self, on: bool) -> None:
        cursor = Qt.CursorShape.PointingHandCursor if on else Qt.CursorShape.ArrowCursor
        self.grid.plot.viewport().setCursor(cursor)

