"""The model manager's table: one row per checkpoint, the memory each precision needs against this
machine (✓ fits, ≈ only just, ✗ does not), and what the Hugging Face cache holds of it."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from ...engine.loading.catalog import Checkpoint, MachineMemory, fit
from ...engine.loading.hub_cache import CachedModel
from ...engine.loading.precision import MODES
from ...formatting import format_bytes, format_count
from ..rich_text import plain_tip

COLUMNS = ("Model", "Layers", "Heads", "Hidden", "Parameters", "Download", *MODES, "In cache")
MEMORY_COLUMN = {p: COLUMNS.index(p) for p in MODES}
CACHE_COLUMN = COLUMNS.index("In cache")

_FIT_STYLE = {"fits": ("✓", "#2b8a3e"), "tight": ("≈", "#e67700"), "too-big": ("✗", "#c92a2a")}
_FIT_WORDS = {"fits": "fits in", "tight": "only just fits in", "too-big": "does not fit in"}
_RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter


def capacity(memory: MachineMemory, precision: str, device: str, placement: str) -> tuple[int | None, str]:
    """Bytes the chosen device and placement offer a model in `precision`, and what they are."""
    gpus = [g.total for g in memory.gpus]
    if precision == "int8" or device == "cpu":
        return memory.ram_total, "RAM"
    if placement == "spread":
        return memory.ram_total + (sum(gpus) if device in ("auto", "cuda") else 0), "the GPUs and RAM"
    if device == "cuda" or (device == "auto" and gpus):
        return (max(gpus), "one GPU") if gpus else (None, "the GPU (its memory is not known yet)")
    return memory.ram_total, "RAM"  # auto without a GPU, or MPS (which shares RAM)


def is_local(c: Checkpoint) -> bool:
    return Path(c.source).is_absolute()


def on_hub(c: Checkpoint) -> bool:
    """A checkpoint that comes from the Hub (not built in, not a local folder)."""
    return not c.built_in and not is_local(c)


class ModelTable(QTableWidget):
    """Checkpoints by row; selection is one whole row."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(0, len(COLUMNS), parent)
        self._rows: list[Checkpoint] = []
        self._cached: dict[str, CachedModel] = {}
        self._cache_dir: Path | None = None
        self.setHorizontalHeaderLabels(COLUMNS)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().hide()
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for precision, column in MEMORY_COLUMN.items():
            self.horizontalHeaderItem(column).setToolTip(
                f"Memory to run in {precision}: the weights plus a full context's key/value cache"
                + (" (int8 runs on the CPU)" if precision == "int8" else ""))
        self.horizontalHeaderItem(CACHE_COLUMN).setToolTip(
            "What the shared Hugging Face cache holds of each model (other tools use the same cache).")

    # --- rows ------------------------------------------------------------------------------------

    def sources(self) -> list[str]:
        return [c.source for c in self._rows]

    def row_of(self, source: str) -> int:
        sources = self.sources()
        return sources.index(source) if source in sources else -1

    def selected(self) -> Checkpoint | None:
        rows = self.selectionModel().selectedRows()
        return self._rows[rows[0].row()] if rows else None

    def select(self, source: str) -> None:
        row = self.row_of(source)
        if row >= 0:
            self.selectRow(row)

    def cached(self, source: str) -> CachedModel | None:
        return self._cached.get(source)

    def cache_text(self, source: str) -> str:
        item = self.item(self.row_of(source), CACHE_COLUMN)
        return item.text() if item is not None else ""

    def add_checkpoint(self, c: Checkpoint) -> None:
        row = self.rowCount()
        self.insertRow(row)
        self._rows.append(c)
        label = c.label + (" — random weights" if c.random_weights and "random" not in c.label else "")
        name = QTableWidgetItem(label)
        tip = f"{html.escape(c.source)}<br>{'pre' if c.pre_layer_norm else 'post'}-LayerNorm · FFN {c.ffn_dim}"
        if c.random_weights:
            tip += "<br><b>Random weights: its text is noise.</b>"
        if c.built_in:
            tip += "<br><b>Built in, no download: trained on Python's documentation, not OPT's weights.</b>"
        name.setToolTip(tip)
        self.setItem(row, 0, name)
        download = "built in" if c.built_in else ("local" if is_local(c) else f"≈ {format_bytes(c.download_bytes)}")
        for col, text in enumerate((str(c.n_layers), str(c.n_heads), str(c.hidden_size), format_count(c.n_params),
                                    download), start=1):
            item = QTableWidgetItem(text)
            item.setTextAlignment(_RIGHT)
            self.setItem(row, col, item)
        for precision, col in MEMORY_COLUMN.items():
            item = QTableWidgetItem(format_bytes(c.memory_bytes(precision)))
            item.setTextAlignment(_RIGHT)
            self.setItem(row, col, item)
        self.setItem(row, CACHE_COLUMN, QTableWidgetItem(""))
        self._fill_cache_cell(row)

    # --- the cache column ---------------------------------------------------------------------------

    def set_cached(self, cached: dict[str, CachedModel], cache_dir: Path) -> None:
        self._cached, self._cache_dir = cached, cache_dir
        for row in range(self.rowCount()):
            self._fill_cache_cell(row)

    def _fill_cache_cell(self, row: int) -> None:
        c = self._rows[row]
        item = self.item(row, CACHE_COLUMN)
        if c.built_in:
            item.setText("built in")
            item.setToolTip("The demo model ships with the app: nothing to download.")
        elif is_local(c):
            item.setText("local folder")
            item.setToolTip(plain_tip(c.source))  # a folder name is anybody's text
        elif (cached := self._cached.get(c.source)) is not None:
            item.setText(f"✓ {format_bytes(cached.size_on_disk)}" if cached.complete else
                         f"partial ({format_bytes(cached.size_on_disk)})")
            item.setToolTip(f"In the Hugging Face cache ({html.escape(str(self._cache_dir))})"
                            if cached.complete else "Part of it is in the cache: Download fetches the rest.")
        else:
            item.setText("")
            item.setToolTip("Not downloaded yet: Download fetches it, or Load downloads it first.")

    # --- memory against this machine -------------------------------------------------------------

    def show_fit(self, memory: MachineMemory, device: str, placement: str) -> None:
        """Mark each memory cell with whether the model fits the chosen device and placement."""
        spread = placement == "spread"
        for row, c in enumerate(self._rows):
            for precision, col in MEMORY_COLUMN.items():
                item = self.item(row, col)
                room, where = capacity(memory, precision, device, placement)
                need = c.memory_bytes(precision, on_cpu=where == "RAM")
                if room is None:
                    item.setText(format_bytes(need))
                    item.setForeground(QBrush())
                    item.setToolTip(f"Needs {format_bytes(need)}; {where}.")
                    continue
                verdict = fit(need, room)
                if spread and verdict == "too-big":
                    verdict = "tight"  # the rest goes to the disk: it runs, slowly
                mark, colour = _FIT_STYLE[verdict]
                item.setText(f"{mark} {format_bytes(need)}")
                item.setForeground(QBrush(QColor(colour)))
                words = "spills onto the disk beyond" if spread and need > room else _FIT_WORDS[verdict]
                item.setToolTip(f"Needs {format_bytes(need)}: {words} {where} ({format_bytes(room)}).")
