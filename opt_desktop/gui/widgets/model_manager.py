"""The model manager: the OPT checkpoints, what each needs against what this machine has, the shared
Hugging Face cache (download with progress and Stop, delete), local folders, and Load.

Downloads are engine jobs (DownloadRequest), submitted through the window's controller like any
other job, so they happen where the engine runs and report bytes as the job's progress; the window
never downloads. The quick reads (the cache, this machine's memory, a folder's files, whether the
Hub answers) run on the dialog's executor, and a qasync coroutine awaits each future (the project's
one idiom for background work): no torch, no Qt object touched off the GUI thread, no timer
polling a future. A failure is one line in the dialog; its traceback goes to the log.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QDialog, QFileDialog, QHBoxLayout, QLabel, QMessageBox, QPushButton, QVBoxLayout, QWidget

from ...engine.jobs.job import Job, JobProgress
from ...engine.loading import hub_cache, hub_probe
from ...engine.loading import precision as modes
from ...engine.loading.catalog import CATALOG, MachineMemory, from_config, machine_memory
from ...engine.loading.folder_check import check_folder
from ...engine.messages.errors import ModelLoadError, SettingsError, describe_error
from ...engine.messages.requests import DownloadRequest
from ...engine.messages.settings import DEMO_SOURCE, LoadRequest
from ...formatting import format_bytes
from ..tasks import Tasks
from .download_progress import DownloadProgressView
from .load_options import LoadOptions
from .model_table import ModelTable, on_hub

log = logging.getLogger(__name__)

FIT_LEGEND = "Memory each precision needs: ✓ fits · ≈ only just fits · ✗ does not fit."


def _local_checkpoint(path: Path):
    """The catalog row for the OPT checkpoint in `path`, or one line saying why it is not one (no torch)."""
    try:
        config = check_folder(path)
    except ModelLoadError as exc:
        return str(exc)
    return from_config(config, source=str(path), label=f"{path.name} (local)")


class ModelManager(QDialog):
    """Pick, fetch, delete and load OPT checkpoints. `load_requested(LoadRequest)` on Load.

    `controller` (gui/controller.py) runs the downloads in the engine; `cache` is another Hub cache
    folder than the shared one (tests)."""

    load_requested = Signal(object)  # LoadRequest

    def __init__(self, parent: QWidget | None = None, *, controller, request: LoadRequest | None = None,
                 cache: str | Path | None = None, check_network: bool = True):
        super().__init__(parent)
        self.setWindowTitle("Model manager")
        self.resize(1100, 680)
        self._controller = controller
        self._cache = Path(cache) if cache is not None else None
        self._memory = machine_memory(include_gpus=False)  # RAM now; GPUs once a worker has asked torch
        self._download: Job | None = None
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="opt-manager")
        self._tasks = Tasks("the model manager")
        self._closed = False
        self._build()
        for checkpoint in CATALOG:
            self.table.add_checkpoint(checkpoint)
        self.set_request(request or LoadRequest())
        self.refresh_cache()
        self._show_memory()
        self._submit(lambda: machine_memory(include_gpus=True), self.set_memory, "Reading the GPUs' memory")
        if check_network:
            self.hub_label.setText("Checking the Hugging Face Hub…")
            self._submit(hub_probe.hub_reachable, self._on_hub_checked, "Checking the Hugging Face Hub")

    # --- construction --------------------------------------------------------------------------

    def _build(self) -> None:
        self.memory_label = QLabel(self)
        self.hub_label = QLabel(self)
        self.hub_label.setWordWrap(True)
        self.table = ModelTable(self)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda _: self.load())

        self.download_button = QPushButton("Download", self)
        self.download_button.setToolTip("Fetch the selected model into the shared Hugging Face cache, without "
                                        "loading it (closing this window stops the download).")
        self.download_button.clicked.connect(self.download_selected)
        self.stop_button = QPushButton("Stop download", self)
        self.stop_button.setToolTip("Stop the download and remove its partial files.")
        self.stop_button.clicked.connect(self.stop_download)
        self.delete_button = QPushButton("Delete from cache…", self)
        self.delete_button.setToolTip("Free the disk space the selected model takes in the Hugging Face cache.")
        self.delete_button.clicked.connect(self.delete_selected)
        self.folder_button = QPushButton("Add a folder…", self)
        self.folder_button.setToolTip("Add a local OPT checkpoint (a fine-tune, say): config.json, weights, tokenizer.")
        self.folder_button.clicked.connect(self._choose_folder)
        row_buttons = QHBoxLayout()
        for b in (self.download_button, self.stop_button, self.delete_button):
            row_buttons.addWidget(b)
        row_buttons.addStretch(1)
        row_buttons.addWidget(self.folder_button)

        self.downloads = DownloadProgressView(self)
        self.options = LoadOptions(self)
        self.options.changed.connect(self._refresh_fit)
        self.message = QLabel(self)
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
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
        layout.addWidget(self.downloads)
        layout.addWidget(self.options)
        layout.addLayout(bottom)

    # --- memory against this machine -------------------------------------------------------------

    def _refresh_fit(self) -> None:
        self.table.show_fit(self._memory, self.options.device, self.options.placement)

    def set_memory(self, memory: MachineMemory) -> None:
        self._memory = memory
        self._show_memory()

    def _show_memory(self) -> None:
        m = self._memory
        parts = [f"RAM {format_bytes(m.ram_total)} ({format_bytes(m.ram_available)} free)"]
        parts += [f"GPU {g.index} {g.name}: {format_bytes(g.total)} ({format_bytes(g.free)} free)" for g in m.gpus]
        self.memory_label.setText("This machine: " + " · ".join(parts) + f". {FIT_LEGEND}")
        self._refresh_fit()

    def _on_hub_checked(self, reachable: bool) -> None:
        self.hub_label.setText("" if reachable else f"No downloads now: {hub_probe.unreachable_reason()}. Cached "
                                                    "models, local folders and the demo model still load.")

    # --- background reads ----------------------------------------------------------------------------

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
        """Background work or a download still running (tests wait for it)."""
        return bool(self._tasks) or self._download is not None

    # --- the cache -------------------------------------------------------------------------------

    def _cache_dir(self) -> Path:
        return self._cache if self._cache is not None else hub_cache.cache_dir()

    def refresh_cache(self) -> None:
        self._submit(lambda: hub_cache.cached_models(self._cache), self._set_cached, "Reading the Hugging Face cache")

    def _set_cached(self, cached: dict) -> None:
        self.table.set_cached(cached, self._cache_dir())
        self._update_buttons()

    def confirm_delete(self, repo_id: str, size: int) -> bool:
        answer = QMessageBox.question(
            self, "Delete from the cache",
            f"Delete {repo_id} ({format_bytes(size)}) from the Hugging Face cache?\n\n"
            "Other tools that use the cache will have to download it again.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Yes

    def delete_selected(self) -> None:
        c = self.table.selected()
        cached = self.table.cached(c.source) if c is not None else None
        if cached is None or not self.confirm_delete(c.source, cached.size_on_disk):
            return
        self.delete_button.setEnabled(False)

        def done(freed: int) -> None:
            self.show_message(f"Deleted {c.source} from the cache ({format_bytes(freed)} freed).")
            self.refresh_cache()

        self._submit(lambda: hub_cache.delete_cached(c.source, self._cache), done, f"Deleting {c.source}")

    # --- downloads: engine jobs ----------------------------------------------------------------------

    def download_selected(self) -> None:
        c = self.table.selected()
        if c is None or not on_hub(c) or self._download is not None:
            return
        request = DownloadRequest(c.source, cache=str(self._cache) if self._cache is not None else None)
        try:
            job = self._controller.submit(request, on_events=self._on_download_events)
        except Exception as exc:  # noqa: BLE001 - one line here, the traceback in the log
            log.exception("Starting the download of %s failed", c.source)
            self.show_message(describe_error(exc, f"Downloading {c.source}")[0], error=True)
            return
        self._download = job
        self.downloads.start(c.source)
        self.message.clear()
        self._update_buttons()
        self._tasks.spawn(self._follow_download(job, c.source))

    def stop_download(self) -> None:
        if self._download is not None and not self._download.stopped:
            self._download.stop()
            self.downloads.stopping()
            self._update_buttons()

    def _on_download_events(self, events: list) -> None:
        progress = [e for e in events if isinstance(e, JobProgress)]
        if progress and self._download is not None and not self._closed:
            self.show_download_progress(progress[-1])

    def show_download_progress(self, p: JobProgress) -> None:
        self.downloads.show_bytes(p.done, p.total)

    async def _follow_download(self, job: Job, repo_id: str) -> None:
        end = await self._controller.wait(job)
        if self._closed:
            return
        self._download = None
        self.downloads.finish()
        if end.reason == "done":
            self.show_message(f"Downloaded {repo_id} into the Hugging Face cache.")
        elif end.reason == "cancelled":
            self.show_message(end.message if repo_id in end.message else f"Download of {repo_id} stopped.")
        else:
            self.show_message(end.message, error=True)  # the engine has logged its traceback
        self.refresh_cache()
        self._update_buttons()

    # --- local folders ---------------------------------------------------------------------------

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder with an OPT checkpoint", str(Path.home()))
        if folder:
            self.add_folder(folder)

    def add_folder(self, folder: str | Path) -> None:
        """Check `folder`'s files off the GUI thread (no torch); an OPT checkpoint becomes a row."""
        path = Path(folder).expanduser().resolve()
        if str(path) in self.table.sources():
            self.table.select(str(path))
            return
        self.show_message(f"Checking {path}…")

        def done(result) -> None:
            if isinstance(result, str):
                self.show_message(result, error=True)
                return
            self.table.add_checkpoint(result)
            self._refresh_fit()
            self.table.select(result.source)
            self.show_message(f"{path} is an OPT checkpoint: press Load to use it.")

        self._submit(lambda: _local_checkpoint(path), done, f"Checking {path}")

    # --- the request -----------------------------------------------------------------------------

    def set_request(self, request: LoadRequest) -> None:
        self.options.set_request(request)
        sources = self.table.sources()
        if request.source not in sources and Path(request.source).is_absolute():
            self.add_folder(request.source)
        self.table.select(request.source if request.source in sources else DEMO_SOURCE)

    def request(self) -> LoadRequest:
        """The request the dialog describes; raises SettingsError with one line when it is impossible."""
        c = self.table.selected()
        if c is None:
            raise SettingsError("Choose a model in the list first.")
        return self.options.request(c.source)

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

    def _update_buttons(self) -> None:
        c = self.table.selected()
        hub = c is not None and on_hub(c)
        cached = self.table.cached(c.source) if c is not None else None
        job = self._download
        self.download_button.setEnabled(hub and job is None and not (cached and cached.complete))
        self.stop_button.setEnabled(job is not None and not job.stopped)
        self.delete_button.setEnabled(hub and cached is not None and job is None)
        self.load_button.setEnabled(c is not None)

    # --- closing ---------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop the download (its job ends in the engine, removing its partial files) and the reads."""
        self._closed = True
        if self._download is not None:
            self._download.stop()
            self._download = None
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._tasks.cancel_all()

    def done(self, result: int) -> None:  # accept(), reject() and Escape all end here
        self._shutdown()
        super().done(result)

    def closeEvent(self, event: QCloseEvent) -> None:
        self._shutdown()
        super().closeEvent(event)
