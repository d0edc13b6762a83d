"""The official OPT checkpoints, their exact sizes, and the memory each needs in each precision.

Plain data and arithmetic: no torch, no network, so the model manager can show it at once.
The architectures are those of the OPT paper's table of model sizes (Zhang et al., 2022, table 1)
and of the facebook/opt-* configs on the Hub. Parameter counts are computed from the architecture
exactly as transformers' OPTForCausalLM builds it (tests compare them with models built on the
meta device from the real configs).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Literal

from .demo import DEMO_LABEL
from ..messages.settings import DEMO_SOURCE

OPT_VOCAB = 50272
OPT_CONTEXT = 2048
# OPT's learned positions keep two extra rows (a padding offset): max_position_embeddings + 2.
POSITION_OFFSET = 2

Precision = Literal["float32", "bfloat16", "float16", "int8"]
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Checkpoint:
    """One OPT architecture. `word_embed_proj_dim` differs from `hidden_size` only for opt-350m,
    which also is the one post-LayerNorm model (no final layer norm, project_in/out instead)."""

    source: str  # Hub id, or "demo"
    label: str
    n_layers: int
    n_heads: int
    hidden_size: int
    ffn_dim: int
    vocab_size: int = OPT_VOCAB
    context_length: int = OPT_CONTEXT
    word_embed_proj_dim: int | None = None  # None: same as hidden_size
    pre_layer_norm: bool = True
    random_weights: bool = False
    built_in: bool = False  # ships with the app: nothing to download, nothing in the Hub cache

    @property
    def embed_dim(self) -> int:
        return self.word_embed_proj_dim or self.hidden_size

    @property
    def projected(self) -> bool:
        return self.embed_dim != self.hidden_size

    # --- parameters ------------------------------------------------------------------------------

    @property
    def layer_params(self) -> int:
        h, f = self.hidden_size, self.ffn_dim
        attention = 4 * (h * h + h)  # q, k, v, out projections with biases
        mlp = (h * f + f) + (f * h + h)  # fc1, fc2
        norms = 2 * (2 * h)  # self_attn_layer_norm, final_layer_norm (weight and bias)
        return attention + mlp + norms

    @property
    def n_params(self) -> int:
        """Every parameter of OPTForCausalLM; lm_head is tied to the token embeddings."""
        h, e = self.hidden_size, self.embed_dim
        total = self.vocab_size * e + (self.context_length + POSITION_OFFSET) * h
        total += self.n_layers * self.layer_params
        if self.projected:
            total += 2 * e * h  # project_in and project_out, no biases
        if self.pre_layer_norm:
            total += 2 * h  # the decoder's final layer norm
        return total

    @property
    def linear_output_rows(self) -> int:
        """Output rows of those nn.Linear layers: int8 keeps a scale and a zero point for each."""
        rows = self.n_layers * (4 * self.hidden_size + self.ffn_dim + self.hidden_size) + self.vocab_size
        return rows + (self.hidden_size + self.embed_dim if self.projected else 0)

    @property
    def linear_weight_params(self) -> int:
        """Weights of the nn.Linear layers a dynamic int8 quantisation converts, lm_head included
        (quantising it makes an int8 copy: the tied embedding itself stays in float32)."""
        h, f = self.hidden_size, self.ffn_dim
        per_layer = 4 * h * h + 2 * h * f
        total = self.n_layers * per_layer + self.vocab_size * self.embed_dim
        if self.projected:
            total += 2 * self.embed_dim * h
        return total

    # --- sizes -----------------------------------------------------------------------------------

    @property
    def download_bytes(self) -> int:
        """The Hub's weight files hold float16 (2 bytes a parameter); tokenizer files add ~1.4 MB."""
        return 2 * self.n_params

    def weights_bytes(self, precision: Precision) -> int:
        """Memory the loaded weights take.

        int8 (engine/loading/precision.py): dynamic quantisation keeps one byte per nn.Linear weight, with a
        float64 scale and an int64 zero point per output row, and float32 for everything else (biases,
        embeddings, layer norms); lm_head gets its own int8 copy beside the tied float32 embedding.
        """
        if precision == "int8":
            linear_in_layers = self.linear_weight_params - self.vocab_size * self.embed_dim
            return 4 * (self.n_params - linear_in_layers) + self.linear_weight_params + 16 * self.linear_output_rows
        return _BYTES[precision] * self.n_params

    def kv_cache_bytes(self, precision: Precision, tokens: int | None = None, on_cpu: bool = False) -> int:
        """Keys and values of every layer for `tokens` positions (default: the whole context).

        int8 runs its activations in float32; so does bfloat16's cache on a CPU (engine/running/attention.py
        keeps it in float32 there, which decodes faster than bfloat16)."""
        tokens = self.context_length if tokens is None else tokens
        wide = precision == "int8" or (precision == "bfloat16" and on_cpu)
        per_value = 4 if wide else _BYTES[precision]
        return 2 * self.n_layers * tokens * self.hidden_size * per_value

    def memory_bytes(self, precision: Precision, on_cpu: bool = False) -> int:
        """What running the model needs: the weights plus a full context's key/value cache."""
        return self.weights_bytes(precision) + self.kv_cache_bytes(precision, on_cpu=on_cpu)


def _opt(size: str, n_layers: int, n_heads: int, hidden: int, **kw) -> Checkpoint:
    return Checkpoint(source=f"facebook/opt-{size}", label=f"OPT-{size.upper()}", n_layers=n_layers,
                      n_heads=n_heads, hidden_size=hidden, ffn_dim=4 * hidden, **kw)


# Table 1 of the OPT paper: layers, heads, width; the FFN is 4x the width everywhere.
OFFICIAL: tuple[Checkpoint, ...] = (
    _opt("125m", 12, 12, 768),
    _opt("350m", 24, 16, 1024, word_embed_proj_dim=512, pre_layer_norm=False),
    _opt("1.3b", 24, 32, 2048),
    _opt("2.7b", 32, 32, 2560),
    _opt("6.7b", 32, 32, 4096),
    _opt("13b", 40, 40, 5120),
    _opt("30b", 48, 56, 7168),
    _opt("66b", 64, 72, 9216),
)

# The built-in demo (engine/loading/demo.py): the tiny OPT trained on Python's documentation that ships in
# resources/demo-model; a test checks these numbers against its config.json and weights.
DEMO = Checkpoint(source=DEMO_SOURCE, label=DEMO_LABEL, n_layers=4, n_heads=6, hidden_size=192, ffn_dim=768,
                  vocab_size=4096, context_length=256, built_in=True)

CATALOG: tuple[Checkpoint, ...] = OFFICIAL + (DEMO,)


def find(source: str) -> Checkpoint | None:
    return next((c for c in CATALOG if c.source == source), None)


# --- this machine's memory ---------------------------------------------------------------------

@dataclass(frozen=True)
class GpuMemory:
    index: int
    name: str
    total: int
    free: int

    @property
    def device(self) -> str:
        return f"cuda:{self.index}"


@dataclass(frozen=True)
class MachineMemory:
    ram_total: int
    ram_available: int
    gpus: tuple[GpuMemory, ...] = ()

    @property
    def gpu_total(self) -> int:
        return sum(g.total for g in self.gpus)


Fit = Literal["fits", "tight", "too-big"]


def fit(need: int, capacity: int) -> Fit:
    """Whether `need` bytes fit in `capacity`: 'tight' leaves under a fifth for everything else."""
    if capacity <= 0 or need > capacity:
        return "too-big"
    return "fits" if need <= 0.8 * capacity else "tight"


def ram() -> tuple[int, int]:
    """(total, available) bytes of RAM."""
    try:
        import psutil  # accelerate depends on it

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except ImportError:
        pass
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0, 0


def gpu_memory() -> tuple[GpuMemory, ...]:
    """Each CUDA GPU's total and free memory, only when torch is already imported.

    Importing torch and creating a CUDA context take seconds: call this on a worker thread, never
    on the GUI's. Before the engine has imported torch it reports no GPUs rather than import it.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return ()
    try:
        if not torch.cuda.is_available():
            return ()
        out = []
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            out.append(GpuMemory(index=i, name=torch.cuda.get_device_name(i), total=int(total), free=int(free)))
        return tuple(out)
    except (RuntimeError, AssertionError):
        return ()


def machine_memory(include_gpus: bool = True) -> MachineMemory:
    total, available = ram()
    return MachineMemory(ram_total=total, ram_available=available, gpus=gpu_memory() if include_gpus else ())


def from_config(config: dict, source: str, label: str | None = None) -> Checkpoint:
    """A local checkpoint (a fine-tune, say) described from its config.json, for the same table."""
    hidden = int(config.get("hidden_size", 768))
    proj = config.get("word_embed_proj_dim")
    return Checkpoint(source=source, label=label or source, n_layers=int(config.get("num_hidden_layers", 12)),
                      n_heads=int(config.get("num_attention_heads", 12)), hidden_size=hidden,
                      ffn_dim=int(config.get("ffn_dim", 4 * hidden)), vocab_size=int(config.get("vocab_size", OPT_VOCAB)),
                      context_length=int(config.get("max_position_embeddings", OPT_CONTEXT)),
                      word_embed_proj_dim=int(proj) if proj else None,
                      pre_layer_norm=bool(config.get("do_layer_norm_before", True))
                      and not config.get("_remove_final_layer_norm", False))
