"""Load an OPT checkpoint (Hub id, local folder, or the built-in demo) with clear one-line errors."""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .attention import register as register_attention
from .demo import DEMO_LABEL, build_demo_model, build_demo_tokenizer
from .errors import ModelLoadError
from .events import LoadProgress, ModelInfo
from .settings import DEMO_SOURCE, LoadRequest

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# What a Hub download needs; the weights are fetched in a second step so only one format comes down.
_HUB_SMALL_FILES = ["config.json", "generation_config.json", "tokenizer*", "vocab.json", "merges.txt",
                    "special_tokens_map.json"]


@dataclass
class LoadedModel:
    model: Any  # OPTForCausalLM, eval mode, eager attention
    tokenizer: Any  # a fast tokenizer
    info: ModelInfo
    device: torch.device


class _Cancelled(Exception):
    pass


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


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_like_path(source: str) -> bool:
    """A source that cannot be a Hub id ('org/name') is taken as a folder path."""
    return source.startswith((".", "/", "~", "\\")) or "\\" in source or not _HUB_ID.match(source)


def locate(request: LoadRequest, progress: Callable[[LoadProgress], None] | None = None,
           stop: threading.Event | None = None) -> Path | None:
    """Find (or download) the checkpoint folder and check it is OPT; None for the demo.

    Cheap failures (no such folder, not OPT, Hub unreachable) surface here, before the caller lets
    go of the model it already has.
    """
    report = progress or (lambda p: None)
    if request.source == DEMO_SOURCE:
        return None
    try:
        folder = _local_folder(request.source, report, stop)
    except _Cancelled:
        raise ModelLoadError(f"Loading {request.source} was cancelled.") from None
    _check_opt_config(request.source, folder)
    return folder


def load_model(request: LoadRequest, progress: Callable[[LoadProgress], None] | None = None,
               stop: threading.Event | None = None, folder: Path | None = None) -> LoadedModel:
    report = progress or (lambda p: None)
    source = request.source
    dtype = _DTYPES[request.dtype]
    device = resolve_device(request.device)
    if folder is None:
        folder = locate(request, progress, stop)  # None for the demo
    try:
        if source == DEMO_SOURCE:
            report(LoadProgress("Building the demo model…"))
            tokenizer = build_demo_tokenizer()
            model = build_demo_model(tokenizer, dtype)
        else:
            report(LoadProgress("Loading the tokenizer…"))
            tokenizer = _load_tokenizer(source, folder)
            report(LoadProgress("Loading the weights…"))
            model = _load_weights(source, folder, dtype, device)
        if stop is not None and stop.is_set():
            raise _Cancelled
        if not getattr(model, "hf_device_map", None):  # accelerate already placed a spread model
            model.to(device)
        model.eval()
        # SDPA returns no attention weights; the engine's chunked eager attention hands them to the capture.
        model.set_attn_implementation(register_attention())
    except _Cancelled:
        raise ModelLoadError(f"Loading {source} was cancelled.") from None
    except ModelLoadError:
        raise
    except (torch.OutOfMemoryError, MemoryError):
        raise ModelLoadError(
            f"Not enough memory to load {source} in {request.dtype} on {device}: "
            "try a smaller model, bfloat16/float16, or another device."
        ) from None
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            raise ModelLoadError(f"Not enough memory to load {source} in {request.dtype} on {device}.") from None
        raise ModelLoadError(f"Could not load {source}: {_one_line(exc)}") from None
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"Could not load {source}: {_one_line(exc)}") from None

    report(LoadProgress("Ready", 1.0))
    return LoadedModel(model=model, tokenizer=tokenizer, info=_model_info(source, model, request.dtype, device),
                       device=torch.device(device))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _local_folder(source: str, report, stop) -> Path:
    """A folder holding the checkpoint: the source itself, or the Hub snapshot (downloaded or cached)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"{source} is a file, not a model folder: choose the folder that holds config.json.")
    if looks_like_path(source):
        raise ModelLoadError(f"No such folder: {source}")
    return _hub_snapshot(source, report, stop)


def _hub_snapshot(repo_id: str, report, stop) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    tqdm_class = _progress_tqdm(report, stop)
    try:
        report(LoadProgress(f"Fetching {repo_id} (configuration)…"))
        folder = Path(snapshot_download(repo_id, allow_patterns=_HUB_SMALL_FILES, tqdm_class=tqdm_class))
        weights = ["*.safetensors", "*.safetensors.index.json"]
        report(LoadProgress(f"Fetching {repo_id} (weights)…", 0.0))
        folder = Path(snapshot_download(repo_id, allow_patterns=weights, tqdm_class=tqdm_class))
        if not any(folder.glob("*.safetensors")):
            # Older OPT repos have only PyTorch .bin weights; transformers reads them with weights_only=True.
            folder = Path(snapshot_download(repo_id, allow_patterns=["pytorch_model*.bin", "pytorch_model*.json"],
                                            tqdm_class=tqdm_class))
    except _Cancelled:
        raise
    except (RepositoryNotFoundError, HFValidationError):
        raise ModelLoadError(f"{repo_id} is not a model on the Hugging Face Hub, nor a local folder.") from None
    except GatedRepoError:
        raise ModelLoadError(f"{repo_id} is gated on the Hub: log in with `hf auth login` and accept its licence.") from None
    except RevisionNotFoundError:
        raise ModelLoadError(f"{repo_id}: the requested revision does not exist on the Hub.") from None
    except LocalEntryNotFoundError:
        raise ModelLoadError(
            f"Cannot load {repo_id}: the Hugging Face Hub is unreachable and the model is not in the local cache."
        ) from None
    except OSError as exc:
        raise ModelLoadError(f"Cannot download {repo_id}: {_one_line(exc)}") from None
    return folder


def _progress_tqdm(report, stop):
    """A tqdm stand-in for huggingface_hub that turns byte counts into LoadProgress and honours stop."""
    from tqdm.auto import tqdm

    class _Reporting(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            kwargs["file"] = open(os.devnull, "w")  # progress goes to the caller, not the terminal
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if stop is not None and stop.is_set():
                raise _Cancelled
            out = super().update(n)
            if self.total and self.unit == "B":
                done, total = self.n / 2**20, self.total / 2**20
                report(LoadProgress(f"Downloading {self.desc or 'weights'}: {done:,.0f} / {total:,.0f} MB",
                                    min(1.0, self.n / self.total)))
            return out

        def close(self):
            super().close()
            try:
                self.fp.close()
            except Exception:
                pass

    return _Reporting


def _check_opt_config(source: str, folder: Path) -> None:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ModelLoadError(f"{source} is not an OPT checkpoint: it has no config.json.")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ModelLoadError(f"{source} is not an OPT checkpoint: its config.json is not valid JSON.") from None
    model_type = cfg.get("model_type") if isinstance(cfg, dict) else None
    if model_type != "opt":
        raise ModelLoadError(f"{source} is not an OPT checkpoint (its model_type is {model_type!r}, not 'opt').")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        raise ModelLoadError(f"{source} has no weights (no *.safetensors or pytorch_model.bin).")


def _load_tokenizer(source: str, folder: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, use_fast=True, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"{source} has no usable tokenizer (vocab.json/merges.txt): {_one_line(exc)}") from None


def _load_weights(source: str, folder: Path, dtype, device: str):
    from transformers import OPTForCausalLM

    kwargs = dict(dtype=dtype, attn_implementation=register_attention(), trust_remote_code=False,
                  low_cpu_mem_usage=True)
    if device == "cuda" and torch.cuda.device_count() > 1:
        kwargs["device_map"] = "auto"  # accelerate spreads a large checkpoint over the GPUs
    return OPTForCausalLM.from_pretrained(folder, **kwargs)


def _model_info(source: str, model, dtype_name: str, device: str) -> ModelInfo:
    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())
    memory = sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers())
    demo = source == DEMO_SOURCE
    return ModelInfo(
        source=source,
        label=DEMO_LABEL if demo else source,
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
        random_weights=demo,
        eos_token_id=cfg.eos_token_id if cfg.eos_token_id is not None else 2,
        bos_token_id=cfg.bos_token_id if cfg.bos_token_id is not None else 2,
    )
