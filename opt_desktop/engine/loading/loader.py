"""Load an OPT checkpoint (Hub id, local folder, or a built-in demo) with clear one-line errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from ...formatting import format_bytes
from . import accuracy, conversion, precision
from ..running.attention import register as register_attention
from ..running.loaded import LoadedModel
from .demo import DEMO_LABEL, DEMO_RANDOM_LABEL, build_demo_model, build_demo_tokenizer, demo_folder
from ..messages.errors import HubUnreachableError, JobCancelled, ModelLoadError
from ..messages.errors import one_line as _one_line
from ..messages.job_context import JobContext
from ..messages.events import LoadProgress, ModelInfo
from .folder_check import check_opt_config, check_tokenizer_files, local_folder
from .hub_download import BytePosition, byte_tqdm
from ..messages.settings import DEMO_RANDOM_SOURCE, DEMO_SOURCE, LoadRequest

# The dtype the weights load in; int8 is quantised from float32 weights once they are loaded.
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "int8": torch.float32}


def resolve_device(name: str) -> str:
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("Device 'cuda' was chosen but no CUDA GPU is available to PyTorch.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelLoadError("Device 'mps' was chosen but Apple's Metal backend is not available here.")
    return name


def locate(request: LoadRequest, job: JobContext | None = None) -> Path | None:
    """Find (or download) the checkpoint folder and check it is OPT; None for demo-random, made in code.

    Cheap failures (a precision mode this machine cannot run, no such folder, not OPT, Hub
    unreachable) surface here, before the caller lets go of the model it already has. `job` hears
    LoadProgress; a stop during a download raises JobCancelled.
    """
    job = job if job is not None else JobContext()
    precision.check_mode(request.dtype, resolve_device(request.device), request.placement)
    if request.source == DEMO_RANDOM_SOURCE:
        return None
    try:
        # The trained demo ships with the app: the same checks and loading code as any folder.
        folder = demo_folder() if request.source == DEMO_SOURCE else _local_folder(
            request.source, job, request.revision)
    except JobCancelled:
        raise JobCancelled(f"Loading {request.source} was stopped.") from None  # the one exception a stop raises
    check_opt_config(request.source, folder)
    check_tokenizer_files(request.source, folder)
    return folder


def load_model(request: LoadRequest, job: JobContext | None = None, folder: Path | None = None) -> LoadedModel:
    """Load the model `request` names. `job` hears LoadProgress and is checked between the steps
    of the load (a stop raises JobCancelled); `folder` is what `locate` found, if it was called first."""
    job = job if job is not None else JobContext()
    report = job.emit
    source = request.source
    device = resolve_device(request.device)
    precision.check_mode(request.dtype, device, request.placement)
    if folder is None:
        folder = locate(request, job)  # None for demo-random
    # On the CPU an approximate mode starts from float32 weights (int8 is quantised from them), and
    # while they are in hand the mode is measured against them, where a float32 copy fits in memory.
    measure = (device == "cpu" and precision.is_approximate(request.dtype) and request.placement == "one-device"
               and (request.dtype == "int8" or accuracy.float32_copy_fits(folder)))
    dtype = torch.float32 if measure else _DTYPES[request.dtype]
    try:
        if source == DEMO_RANDOM_SOURCE:
            report(LoadProgress("Building the random-weight demo model…"))
            tokenizer = build_demo_tokenizer()
            model = build_demo_model(tokenizer, dtype)
        else:
            report(LoadProgress("Loading the tokenizer…"))
            tokenizer = _load_tokenizer(source, folder)
            job.check()
            report(LoadProgress("Loading the weights…"))
            model = _load_weights(source, folder, dtype, device, request)
        job.check()
        if not getattr(model, "hf_device_map", None):  # accelerate already placed a spread model
            model.to(device)
        model.eval()
        # SDPA returns no attention weights; the engine's chunked eager attention hands them to the capture.
        model.set_attn_implementation(register_attention())
        n_params = sum(p.numel() for p in model.parameters())  # before int8 takes weights out of parameters()
        drift = None  # the mode against float32, when it was measured
        if measure:
            drift = _convert_measured(model, tokenizer, request.dtype, device, report)
        elif not getattr(model, "hf_device_map", None):  # loaded in its dtype: lay weights out for the device
            conversion.convert(model, request.dtype, device)
        job.check()
    except JobCancelled:
        raise JobCancelled(f"Loading {source} was stopped.") from None
    except ModelLoadError:
        raise
    except (torch.OutOfMemoryError, MemoryError):
        raise ModelLoadError(
            f"Not enough memory to load {source} in {request.dtype} on {device}: "
            "try a smaller model, bfloat16 or float16 (int8 loads float32 weights first), or another device."
        ) from None
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise ModelLoadError(f"Not enough memory to load {source} in {request.dtype} on {device}.") from None
        raise ModelLoadError(f"Could not load {source}: {_one_line(exc)}") from None
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"Could not load {source}: {_one_line(exc)}") from None

    report(LoadProgress("Ready", 1.0))
    info = replace(_model_info(source, model, request.dtype, device), n_params=n_params,
                   memory_bytes=conversion.footprint(model), accuracy=drift)
    return LoadedModel(model=model, tokenizer=tokenizer, info=info, device=torch.device(device))


def _convert_measured(model, tokenizer, dtype_name: str, device: str, report):
    """Turn a loaded float32 model into `dtype_name` in place; returns its ModeAccuracy against float32."""
    bos = model.config.bos_token_id if model.config.bos_token_id is not None else 2
    ids = accuracy.reference_ids(tokenizer, bos)[:, : model.config.max_position_embeddings]  # fits the context
    report(LoadProgress(f"Measuring {dtype_name} against float32…"))
    reference = accuracy.next_token_logprobs(model, ids)
    report(LoadProgress(f"Converting the weights to {dtype_name}…"))
    conversion.convert(model, dtype_name, device)
    return accuracy.compare(reference, accuracy.next_token_logprobs(model, ids))


def _local_folder(source: str, job: JobContext, revision: str | None = None) -> Path:
    """A folder holding the checkpoint: the source itself, or the Hub snapshot (downloaded or cached)."""
    folder = local_folder(source)
    return folder if folder is not None else _hub_snapshot(source, job, revision)


def _hub_snapshot(repo_id: str, job: JobContext, revision: str | None = None) -> Path:
    """The checkpoint's folder in the shared Hugging Face cache, downloading what is missing.

    A complete cached snapshot is used without touching the network (instant, and no timeout when
    offline); otherwise a short reachability check fails fast, before huggingface_hub's own
    10-second timeouts, when the Hub cannot be reached.
    """
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from . import hub_cache, hub_download, hub_probe

    report = job.emit
    cached = hub_cache.cached_snapshot(repo_id, revision=revision)
    if cached is not None:
        report(LoadProgress(f"Found {repo_id} in the Hugging Face cache"))
        return cached
    unreachable = f"Cannot load {repo_id}: {hub_probe.unreachable_reason()} and the model is not in the local cache."
    if not hub_probe.hub_reachable():
        raise HubUnreachableError(unreachable)
    try:
        report(LoadProgress(f"Fetching {repo_id}…", 0.0))
        with hub_download.stoppable(repo_id, job):  # a stop leaves no partial files behind
            return hub_download.fetch_snapshot(repo_id, tqdm_class=_progress_tqdm(job, repo_id), revision=revision)
    except JobCancelled:
        raise
    except GatedRepoError:  # a subclass of RepositoryNotFoundError: test it first
        raise ModelLoadError(f"{repo_id} is gated on the Hub: log in with `hf auth login` and accept its licence.") from None
    except (RepositoryNotFoundError, HFValidationError):
        raise ModelLoadError(f"{repo_id} is not a model on the Hugging Face Hub, nor a local folder.") from None
    except RevisionNotFoundError:
        raise ModelLoadError(f"{repo_id}: the requested revision does not exist on the Hub.") from None
    except LocalEntryNotFoundError:
        raise HubUnreachableError(unreachable) from None
    except OSError as exc:
        raise ModelLoadError(f"Cannot download {repo_id}: {_one_line(exc)}") from None


def _progress_tqdm(job: JobContext, repo_id: str):
    """huggingface_hub's byte counts as LoadProgress; a stop raises inside the download."""
    report = job.emit

    def on_bytes(done: int, total: int) -> None:
        if total:
            report(LoadProgress(f"Downloading {repo_id}: {format_bytes(done)} / {format_bytes(total)}",
                                min(1.0, done / total)))

    return byte_tqdm(BytePosition(on_bytes).update, job)


def _load_tokenizer(source: str, folder: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, use_fast=True, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"{source} has no usable tokenizer (vocab.json/merges.txt): {_one_line(exc)}") from None


def _load_weights(source: str, folder: Path, dtype, device: str, request: LoadRequest | None = None):
    """The model's weights on `device`, or, with placement "spread", over the GPUs, RAM and disk."""
    from transformers import OPTForCausalLM

    from ..messages.errors import SettingsError
    from .placement import spread_kwargs

    kwargs = dict(dtype=dtype, attn_implementation=register_attention(), trust_remote_code=False,
                  low_cpu_mem_usage=True)
    if request is not None and request.placement == "spread":
        try:
            kwargs.update(spread_kwargs(source, device, request.max_memory, request.offload_folder))
        except SettingsError as exc:
            raise ModelLoadError(f"Cannot spread {source}: {exc}") from None
    elif request is None and device == "cuda" and torch.cuda.device_count() > 1:
        kwargs["device_map"] = "auto"  # callers that predate `placement`: spread over the GPUs
    from safetensors import SafetensorError

    from transformers.utils import logging as hf_logging

    # transformers draws its own "Loading weights" bar on stderr; the app and the CLI report
    # loading themselves, so its bars stay silent (restored after, whatever they were).
    previous = hf_logging.set_tqdm_hook(lambda factory, args, kw: hf_logging.EmptyTqdm(*args, **kw))
    try:
        return OPTForCausalLM.from_pretrained(folder, **kwargs)
    except SafetensorError as exc:  # a truncated or damaged download
        raise ModelLoadError(f"The weights of {source} are damaged or incomplete ({_one_line(exc)}): "
                             "download them again, or check the files in the folder.") from exc
    finally:
        hf_logging.set_tqdm_hook(previous)


def _revision(model) -> str | None:
    """The Hub commit of a model loaded from the cache: its folder is .../snapshots/<commit>."""
    folder = Path(getattr(model, "name_or_path", "") or "")
    return folder.name if folder.parent.name == "snapshots" else None


def _model_info(source: str, model, dtype_name: str, device: str) -> ModelInfo:
    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())
    memory = sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers())
    labels = {DEMO_SOURCE: DEMO_LABEL, DEMO_RANDOM_SOURCE: DEMO_RANDOM_LABEL}
    from .placement import condense

    device_map = getattr(model, "hf_device_map", None)
    return ModelInfo(
        source=source,
        label=labels.get(source, source),
        n_layers=cfg.num_hidden_layers,
        n_heads=cfg.num_attention_heads,
        hidden_size=cfg.hidden_size,
        word_embed_proj_dim=cfg.word_embed_proj_dim,
        ffn_dim=cfg.ffn_dim,
        vocab_size=cfg.vocab_size,
        context_length=cfg.max_position_embeddings,
        n_params=n_params,
        dtype=dtype_name,
        device=device,
        memory_bytes=memory,
        pre_layer_norm=bool(cfg.do_layer_norm_before),
        random_weights=source == DEMO_RANDOM_SOURCE,
        eos_token_id=cfg.eos_token_id if cfg.eos_token_id is not None else 2,
        bos_token_id=cfg.bos_token_id if cfg.bos_token_id is not None else 2,
        revision=_revision(model),
        placement=condense(device_map, cfg.num_hidden_layers) if device_map else (),
    )
