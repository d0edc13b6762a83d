"""The model manager: the OPT checkpoints, what each needs against what this machine has, the shared
Hugging Face cache (download with progress and Cancel, delete), local folders, and Load.

Everything slow (scanning the cache, GPU memory, checking a folder, the network probe, downloads)
runs on an executor, and a qasync coroutine awaits each future (the project's one idiom for
background work); a download's progress hops from its worker to the GUI thread through an
EventPump. No Qt object is touched off the GUI thread and no timer polls a future. A failure is one
line in the dialog; its traceback goes to the log.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, get_args

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QCloseEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...engine.loading import hub_cache
from ...engine.loading import precision as modes
from ...engine.loading.catalog import CATALOG, Checkpoint, MachineMemory, fit, from_config, machine_memory
from ...engine.messages.errors import SettingsError
from ...engine.messages.errors import describe_error
from ...engine.loading.placement import format_max_memory, parse_max_memory
from ...engine.messages.settings import DEMO_SOURCE, Device, DType, LoadRequest
from ...formatting import format_bytes, format_count
from ..controller import EventPump
from ..rich_text import plain_tip
from ..tasks import Tasks

PRECISIONS: tuple[str, ...] = get_args(DType)
DEVICES: tuple[str, ...] = get_args(Device)
PLACEMENTS = (("one-device", "One device"), ("spread", "Spread over GPUs, RAM and disk"))
COLUMNS = ("Model", "Layers", "Heads", "Hidden", "Parameters", "Download", *PRECISIONS, "In cache")
MEMORY_COLUMN = {p: COLUMNS.index(p) for p in PRECISIONS}
CACHE_COLUMN = COLUMNS.index("In cache")

log = logging.getLogger(__name__)

_FIT_STYLE = {"fits": ("✓", "#2b8a3e"), "tight": ("≈", "#e67700"), "too-big": ("✗", "#c92a2a")}


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "time left unknown"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min left"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60} s left"
    return f"{seconds} s left"


def describe_progress(repo_id: str, p: hub_cache.DownloadProgress) -> str:
    """'Downloading facebook/opt-125m: 120 MB of 250 MB · 5.2 MB/s · 23 s left'."""
    of = f" of {format_bytes(p.total)}" if p.total else ""
    return (f"Downloading {repo_id}: {format_bytes(p.done)}{of} · {format_bytes(int(p.rate))}/s · "
            f"{_eta(p.eta)}")


class ModelManager(QDialog):
    """Pick, fetch, delete and load OPT checkpoints. `load_requested(LoadRequest)` on Load."""

    load_requested = Signal(object)  # LoadRequest

    def __init__(self, parent: QWidget | None = None, *, request: LoadRequest | None = None,
                 cache: str | Path | None = None,
                 start_download: Callable[..., hub_cache.Download] = hub_cache.start_download,
                 check_network: bool = True):
        super().__init__(parent)
        self.setWindowTitle("Model manager")
        self.resize(1100, 680)
        self._cache = Path(cache) if cache is not None else None
        self._start_download = start_download
        self._rows: list[Checkpoint] = []
        self._cached: dict[str, hub_cache.CachedModel] = {}
        self._memory = machine_memory(include_gpus=False)  # RAM now; GPUs once a worker has asked torch
        self._download: hub_cache.Download | None = None
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="opt-manager")
        self._tasks = Tasks("the model manager")
        self._closed = False
        self._build()
        for checkpoint in CATALOG:
            self._add_row(checkpoint)
        self.set_request(request or LoadRequest())
        self.refresh_cache()
        self._submit(lambda: machine_memory(include_gpus=True), self.set_memory, "Reading the GPUs' memory")
        if check_network:
            self.hub_label.setText("Checking the Hugging Face Hub…")
            self._submit(hub_cache.hub_reachable, self._on_hub_checked, "Checking the Hugging Face Hub")

    # --- construction --------------------------------------------------------------------------

    def _build(self) -> None:
        self.memory_label = QLabel(self)
        self.hub_label = QLabel(self)
        self.hub_label.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for precision, column in MEMORY_COLUMN.items():
            self.table.horizontalHeaderItem(column).setToolTip(
                f"Memory to run in {precision}: the weights plus a full context's key/value cache"
                + (" (int8 runs on the CPU)" if precision == "int8" else ""))
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda _: self.load())

        self.download_button = QPushButton("Download", self)
        self.download_button.setToolTip("Fetch the selected model into the shared Hugging Face cache "
                                        "(closing this window cancels it).")
        self.download_button.clicked.connect(self.download_selected)
        self.cancel_button = QPushButton("Cancel download", self)
        self.cancel_button.clicked.connect(self.cancel_download)
        self.delete_button = QPushButton("Delete from cache…", self)
        self.delete_button.setToolTip("Free the disk space the selected model takes in the Hugging Face cache.")
        self.delete_button.clicked.connect(self.delete_selected)
        self.folder_button = QPushButton("Open folder…", self)
        self.folder_button.setToolTip("Add a local OPT checkpoint (a fine-tune, say): config.json, weights, tokenizer.")
        self.folder_button.clicked.connect(self._choose_folder)
        row_buttons = QHBoxLayout()
        for b in (self.download_button, self.cancel_button, self.delete_button):
            row_buttons.addWidget(b)
        row_buttons.addStretch(1)
        row_buttons.addWidget(self.folder_button)

        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1000)
        self.progress_label = QLabel(self)
        self.progress.hide()
        self.progress_label.hide()
        self.message = QLabel(self)
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.precision_combo = QComboBox(self)
        caps = modes.capabilities()  # asks torch only when it is already loaded
        for p in PRECISIONS:
            label = f"{p} (approx.)" if modes.is_approximate(p) else p
            self.precision_combo.addItem(label, p)
            self.precision_combo.setItemData(self.precision_combo.count() - 1, modes.mode_note(p, "auto", caps),
                                             Qt.ItemDataRole.ToolTipRole)
        self.device_combo = QComboBox(self)
        for d in DEVICES:
            self.device_combo.addItem(d, d)
        self.placement_combo = QComboBox(self)
        for value, text in PLACEMENTS:
            self.placement_combo.addItem(text, value)
        self.placement_combo.setToolTip("Spread: accelerate fills the GPUs in order, then RAM, then the offload "
                                        "folder on disk, so a model bigger than one device still runs (slowly).")
        self.max_memory_edit = QLineEdit(self)
        self.max_memory_edit.setPlaceholderText("e.g. 0=20GiB, cpu=30GiB (blank: all there is)")
        self.offload_edit = QLineEdit(self)
        self.offload_edit.setPlaceholderText("blank: the app's cache folder")
        self.offload_button = QPushButton("Browse…", self)
        self.offload_button.clicked.connect(self._choose_offload_folder)
        offload_row = QHBoxLayout()
        offload_row.addWidget(self.offload_edit, 1)
        offload_row.addWidget(self.offload_button)
        for combo in (self.precision_combo, self.device_combo, self.placement_combo):
            combo.currentIndexChanged.connect(self._refresh_fit)
        self.placement_combo.currentIndexChanged.connect(self._update_placement_fields)

        options = QGroupBox("Load with", self)
        form = QFormLayout(options)
        form.addRow("Precision", self.precision_combo)
        form.addRow("Device", self.device_combo)
        form.addRow("Placement", self.placement_combo)
        form.addRow("Max memory", self.max_memory_edit)
        form.addRow("Offload folder", offload_row)

        self.load_button = QPushButton("Load", self)
        self.load_button.setDefault(True)
        self.load_button.clicked.connect(self.load)
        close = QPushButton("Close", self)
        close.clicked.connect(self.reject)
        bottom = QHBoxLayout()
        bottom.addWidget(self.message, 1)
        bottom.addWidget(self.load_button)
        bottom.addWidget(close)

        layout = QVBoxLayout(self)
        layout.addWidget(self.memory_label)
        layout.addWidget(self.hub_label)
        layout.addWidget(self.table, 1)
        layout.addLayout(row_buttons)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.progress)
        layout.addWidget(options)
        layout.addLayout(bottom)
        self._show_memory()
        self._update_placement_fields()

    # --- rows ------------------------------------------------------------------------------------

    def sources(self) -> list[str]:
        return [c.source for c in self._rows]

    def row_of(self, source: str) -> int:
        return self.sources().index(source) if source in self.sources() else -1

    def selected(self) -> Checkpoint | None:
        rows = self.table.selectionModel().selectedRows()
        return self._rows[rows[0].row()] if rows else None

    def select(self, source: str) -> None:
        row = self.row_of(source)
        if row >= 0:
            self.table.selectRow(row)

    def cache_text(self, source: str) -> str:
        item = self.table.item(self.row_of(source), CACHE_COLUMN)
        return item.text() if item is not None else ""

    def _add_row(self, c: Checkpoint) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        self._rows.append(c)
        local = Path(c.source).is_absolute()
        label = c.label + (" — random weights" if c.random_weights and "random" not in c.label else "")
        name = QTableWidgetItem(label)
        tip = f"{html.escape(c.source)}<br>{'pre' if c.pre_layer_norm else 'post'}-LayerNorm · FFN {c.ffn_dim}"
        if c.random_weights:
            tip += "<br><b>Random weights: its text is noise.</b>"
        if c.built_in:
            tip += "<br><b>Built in, no download: trained on Python's documentation, not OPT's weights.</b>"
        name.setToolTip(tip)
        download = "built in" if c.built_in else ("local" if local else f"≈ {format_bytes(c.download_bytes)}")
        cells = [name, str(c.n_layers), str(c.n_heads), str(c.hidden_size), format_count(c.n_params), download]
        for col, value in enumerate(cells):
            item = value if isinstance(value, QTableWidgetItem) else QTableWidgetItem(value)
            if col:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(row, col, item)
        for precision, col in MEMORY_COLUMN.items():
            item = QTableWidgetItem(format_bytes(c.memory_bytes(precision)))
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(row, col, item)
        self.table.setItem(row, CACHE_COLUMN, QTableWidgetItem(""))
        self._fill_cache_cell(row)
        self._fill_fit(row)

    def _fill_cache_cell(self, row: int) -> None:
        c = self._rows[row]
        item = self.table.item(row, CACHE_COLUMN)
        if c.built_in:
            item.setText("built in")
            item.setToolTip("The demo model ships with the app: nothing to download.")
        elif Path(c.source).is_absolute():
            item.setText("local folder")
            item.setToolTip(plain_tip(c.source))  # a folder name is anybody's text
        elif (cached := self._cached.get(c.source)) is not None:
            item.setText(f"✓ {format_bytes(cached.size_on_disk)}" if cached.complete else
                         f"partial ({format_bytes(cached.size_on_disk)})")
            item.setToolTip(f"In the Hugging Face cache ({html.escape(str(self._cache_dir()))})"
                            if cached.complete else "Part of it is in the cache: Download fetches the rest.")
        else:
            item.setText("")
            item.setToolTip("Not downloaded yet: Download fetches it, or Load downloads it first.")

    # --- memory against this machine -------------------------------------------------------------

    def _capacity(self, precision: str) -> tuple[int | None, str]:
        """Bytes the chosen device and placement offer, and what they are, for the fit colours."""
        m = self._memory
        device = self.device_combo.currentData()
        gpus = [g.total for g in m.gpus]
        if precision == "int8" or device == "cpu":
            return m.ram_total, "RAM"
        if self.placement_combo.currentData() == "spread":
            return m.ram_total + (sum(gpus) if device in ("auto", "cuda") else 0), "the GPUs and RAM"
        if device == "cuda" or (device == "auto" and gpus):
            return (max(gpus), "one GPU") if gpus else (None, "the GPU (its memory is not known yet)")
        return m.ram_total, "RAM"  # auto without a GPU, or MPS (which shares RAM)

    def _fill_fit(self, row: int) -> None:
        c = self._rows[row]
        spread = self.placement_combo.currentData() == "spread"
        for precision, col in MEMORY_COLUMN.items():
            item = self.table.item(row, col)
            capacity, where = self._capacity(precision)
            need = c.memory_bytes(precision, on_cpu=where == "RAM")
            if capacity is None:
                item.setText(format_bytes(need))
                item.setForeground(QBrush())
                item.setToolTip(f"Needs {format_bytes(need)}; {where}.")
                continue
            verdict = fit(need, capacity)
            if spread and verdict == "too-big":
                verdict = "tight"  # the rest goes to the disk: it runs, slowly
            mark, colour = _FIT_STYLE[verdict]
            item.setText(f"{mark} {format_bytes(need)}")
            item.setForeground(QBrush(QColor(colour)))
            words = {"fits": "fits in", "tight": "only just fits in", "too-big": "does not fit in"}[verdict]
            if spread and need > capacity:
                words = "spills onto the disk beyond"
            item.setToolTip(f"Needs {format_bytes(need)}: {words} {where} ({format_bytes(capacity)}).")

    def _refresh_fit(self) -> None:
        for row in range(self.table.rowCount()):
            self._fill_fit(row)

    def set_memory(self, memory: MachineMemory) -> None:
        self._memory = memory
        self._show_memory()
        self._refresh_fit()

    def _show_memory(self) -> None:
        m = self._memory
        parts = [f"RAM {format_bytes(m.ram_total)} ({format_bytes(m.ram_available)} free)"]
        parts += [f"GPU {g.index} {g.name}: {format_bytes(g.total)} ({format_bytes(g.free)} free)" for g in m.gpus]
        self.memory_label.setText("This machine: " + " · ".join(parts))

    def _on_hub_checked(self, reachable: bool) -> None:
        self.hub_label.setText(
            "" if reachable else "The Hugging Face Hub is unreachable: cached models, local folders and the "
                                 "demo model still load.")

    # --- background work ---------------------------------------------------------------------------

    def _submit(self, fn: Callable[[], Any], on_done: Callable[[Any], None], doing: str) -> asyncio.Task:
        """Run `fn` on the dialog's executor; `on_done(result)` on the GUI thread once it returns."""
        return self._tasks.spawn(self._background(fn, on_done, doing))

    async def _background(self, fn: Callable[[], Any], on_done: Callable[[Any], None], doing: str) -> None:
        try:
            result = await asyncio.wrap_future(self._executor.submit(fn))
        except Exception as exc:  # noqa: BLE001 - one line here, the traceback in the log
            if not self._closed:
                message, _details = describe_error(exc, doing)
                log.exception("%s failed", doing)
                self.show_message(message, error=True)
            return
        if not self._closed:
            on_done(result)

    def is_busy(self) -> bool:
        """Background work still running (tests wait for it)."""
        return bool(self._tasks) or self._download is not None

    # --- the cache -------------------------------------------------------------------------------

    def _cache_dir(self) -> Path:
        return self._cache if self._cache is not None else hub_cache.cache_dir()

    def refresh_cache(self) -> None:
        self._submit(lambda: hub_cache.cached_models(self._cache), self._set_cached, "Reading the Hugging Face cache")

    def _set_cached(self, cached: dict) -> None:
        self._cached = cached
        for row in range(self.table.rowCount()):
            self._fill_cache_cell(row)
        self._update_buttons()

    def confirm_delete(self, repo_id: str, size: int) -> bool:
        answer = QMessageBox.question(
            self, "Delete from the cache",
            f"Delete {repo_id} ({format_bytes(size)}) from the Hugging Face cache?\n\n"
            "Other tools that use the cache will have to download it again.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Yes

    def delete_selected(self) -> None:
        c = self.selected()
        cached = self._cached.get(c.source) if c is not None else None
        if cached is None or not self.confirm_delete(c.source, cached.size_on_disk):
            return
        self.delete_button.setEnabled(False)

        def done(freed: int) -> None:
            self.show_message(f"Deleted {c.source} from the cache ({format_bytes(freed)} freed).")
            self.refresh_cache()

        self._submit(lambda: hub_cache.delete_cached(c.source, self._cache), done, f"Deleting {c.source}")

    # --- downloads -------------------------------------------------------------------------------

    def download_selected(self) -> None:
        c = self.selected()
        if c is None or c.built_in or Path(c.source).is_absolute() or self._download is not None:
            return
        # Progress starts on the download's worker thread; the pump hands it to this thread, coalesced.
        pump = EventPump(asyncio.get_event_loop(), lambda updates: self._show_progress(updates[-1]))
        try:
            download = self._start_download(c.source, cache=self._cache, on_progress=pump.put,
                                            executor=self._executor)
        except Exception as exc:  # noqa: BLE001 - one line here, the traceback in the log
            log.exception("Starting the download of %s failed", c.source)
            self.show_message(describe_error(exc, f"Downloading {c.source}")[0], error=True)
            return
        self._download = download
        self.progress.setRange(0, 0)  # busy until the size is known
        self.progress.show()
        self.progress_label.setText(f"Starting the download of {c.source}…")
        self.progress_label.show()
        self.message.clear()
        self._update_buttons()
        self._tasks.spawn(self._follow_download(download, pump))

    def cancel_download(self) -> None:
        if self._download is not None and not self._download.done():
            self._download.cancel()
            self.progress_label.setText(f"Cancelling the download of {self._download.repo_id}…")
            self._update_buttons()

    def _show_progress(self, p: hub_cache.DownloadProgress) -> None:
        d = self._download
        if d is None or self._closed or d.done():
            return
        if d.state == "running":
            self.progress_label.setText(describe_progress(d.repo_id, p))
        if p.fraction is None:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(round(p.fraction * 1000))

    async def _follow_download(self, d: hub_cache.Download, pump: EventPump) -> None:
        try:
            await asyncio.wrap_future(d.future)
        except hub_cache.DownloadCancelled:
            outcome, error = f"Download of {d.repo_id} cancelled; its partial files were removed.", False
        except Exception as exc:  # noqa: BLE001 - DownloadFailed is one line already; anything else is summed up
            log.exception("Downloading %s failed", d.repo_id)
            message = str(exc) if isinstance(exc, hub_cache.DownloadFailed) else describe_error(
                exc, f"Downloading {d.repo_id}")[0]
            outcome, error = message, True
        else:
            outcome, error = f"Downloaded {d.repo_id} into the Hugging Face cache.", False
        finally:
            pump.close()
        if self._closed:
            return
        self._download = None
        self.progress.hide()
        self.progress_label.hide()
        self.show_message(outcome, error=error)
        self.refresh_cache()
        self._update_buttons()

    # --- local folders ---------------------------------------------------------------------------

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder with an OPT checkpoint", str(Path.home()))
        if folder:
            self.add_folder(folder)

    def add_folder(self, folder: str | Path) -> None:
        """Check `folder` off the GUI thread; an OPT checkpoint becomes a row, anything else a message."""
        path = Path(folder).expanduser().resolve()
        if str(path) in self.sources():
            self.select(str(path))
            return
        self.show_message(f"Checking {path}…")

        def check():
            from ...engine.loading.loader import check_folder  # imports torch: on the worker, not at start-up

            problem = check_folder(path)
            if problem is not None:
                return problem
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
            return from_config(config, source=str(path), label=f"{path.name} (local)")

        def done(result) -> None:
            if isinstance(result, str):
                self.show_message(result, error=True)
                return
            self._add_row(result)
            self.select(result.source)
            self.show_message(f"{path} is an OPT checkpoint: press Load to use it.")

        self._submit(check, done, f"Checking {path}")

    def _choose_offload_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for weights that fit nowhere else",
                                                  self.offload_edit.text() or str(Path.home()))
        if folder:
            self.offload_edit.setText(folder)

    # --- the request -----------------------------------------------------------------------------

    def set_request(self, request: LoadRequest) -> None:
        for combo, value in ((self.precision_combo, request.dtype), (self.device_combo, request.device),
                             (self.placement_combo, request.placement)):
            index = combo.findData(value)
            if index >= 0:
                combo.setCurrentIndex(index)
        self.max_memory_edit.setText(format_max_memory(request.max_memory))
        self.offload_edit.setText(request.offload_folder or "")
        if request.source not in self.sources() and Path(request.source).is_absolute():
            self.add_folder(request.source)
        self.select(request.source if request.source in self.sources() else DEMO_SOURCE)

    def request(self) -> LoadRequest:
        """The request the dialog describes; raises SettingsError with one line when it is impossible."""
        c = self.selected()
        if c is None:
            raise SettingsError("Choose a model in the list first.")
        spread = self.placement_combo.currentData() == "spread"
        return LoadRequest.parse(
            source=c.source, dtype=self.precision_combo.currentData(), device=self.device_combo.currentData(),
            placement=self.placement_combo.currentData(),
            max_memory=parse_max_memory(self.max_memory_edit.text()) if spread else None,
            offload_folder=(self.offload_edit.text().strip() or None) if spread else None)

    def load(self) -> None:
        try:
            request = self.request()
        except SettingsError as exc:
            self.show_message(str(exc), error=True)
            return
        problem = modes.mode_problem(request.dtype, request.device, modes.capabilities(), request.placement)
        if problem is not None:  # the engine would refuse it too; say so here, with the dialog still open
            self.show_message(problem, error=True)
            return
        self.load_requested.emit(request)
        self.accept()

    # --- state -----------------------------------------------------------------------------------

    def show_message(self, text: str, error: bool = False) -> None:
        self.message.setText(text)
        self.message.setStyleSheet("color: #c92a2a;" if error else "")

    def _update_placement_fields(self) -> None:
        spread = self.placement_combo.currentData() == "spread"
        for w in (self.max_memory_edit, self.offload_edit, self.offload_button):
            w.setEnabled(spread)

    def _update_buttons(self) -> None:
        c = self.selected()
        hub = c is not None and not c.built_in and not Path(c.source).is_absolute()
        cached = self._cached.get(c.source) if c is not None else None
        downloading = self._download is not None
        self.download_button.setEnabled(hub and not downloading and not (cached and cached.complete))
        self.cancel_button.setEnabled(downloading and self._download.state == "running")
        self.delete_button.setEnabled(hub and cached is not None and not downloading)
        self.load_button.setEnabled(c is not None)

    # --- closing ---------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop the download (waiting for its partial files to go) and the background work."""
        self._closed = True
        if self._download is not None:
            self._download.cancel()
            self._download.wait(5.0)
            self._download = None
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._tasks.cancel_all()

    def done(self, result: int) -> None:  # accept(), reject() and Escape all end here
        self._shutdown()
        super().done(result)

    def closeEvent(self, event: QCloseEvent) -> None:
        self._shutdown()
        super().closeEvent(event)
