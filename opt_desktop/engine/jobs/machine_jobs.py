"""Jobs about the engine's machine rather than a model: its memory, its Hugging Face cache, a folder
on it, whether it reaches the Hub. The model manager asks them of the engine, so that with the engine
on a server it shows the server's GPUs, cache and folders; none needs a model, and each is small
enough to run between two decode steps of a generation.
"""

from __future__ import annotations

from pathlib import Path

from ..loading.catalog import GpuMemory, MachineMemory
from ..loading.hub_cache import CachedModel, CacheListing
from ..messages.requests import CacheRequest, DeleteCachedRequest, FolderRequest, HubCheckRequest, MachineRequest
from ..messages.results import Folder
from .dispatch import register_analysis


def _machine(loaded, request: MachineRequest, job) -> MachineMemory:
    from ..loading.catalog import machine_memory

    if request.import_torch:
        import torch  # noqa: F401 - the GPUs are counted only once torch is imported

    return machine_memory()


def _cache(loaded, request: CacheRequest, job) -> CacheListing:
    from ..loading.hub_cache import cache_dir, cached_models

    folder = request.cache if request.cache is not None else str(cache_dir())
    return CacheListing(folder, tuple(cached_models(request.cache).values()))


def _delete(loaded, request: DeleteCachedRequest, job) -> int:
    from ..loading.hub_cache import delete_cached

    return delete_cached(request.repo_id, request.cache)


def _hub(loaded, request: HubCheckRequest, job) -> str:
    from ..loading.hub_probe import hub_reachable, unreachable_reason

    return "" if hub_reachable() else unreachable_reason()


def _folder(loaded, request: FolderRequest, job) -> Folder:
    from ..loading.folder_check import check_folder

    path = Path(request.path).expanduser().resolve()  # ~ and relative paths as the machine reads them
    return Folder(str(path), check_folder(path))


register_analysis(MachineRequest, "machine", "Reading the machine's memory", _machine, needs_model=False,
                  result_types=(MachineMemory, GpuMemory))
register_analysis(CacheRequest, "cache", "Reading the Hugging Face cache", _cache, needs_model=False,
                  result_types=(CacheListing, CachedModel))
register_analysis(DeleteCachedRequest, "delete_cached", "Deleting from the Hugging Face cache", _delete,
                  needs_model=False)
register_analysis(HubCheckRequest, "hub_check", "Checking the Hugging Face Hub", _hub, needs_model=False)
register_analysis(FolderRequest, "folder", "Checking the folder", _folder, needs_model=False, result_types=(Folder,))

MACHINE_REQUESTS = (MachineRequest, CacheRequest, DeleteCachedRequest, HubCheckRequest, FolderRequest)
