"""Random-weight OPT models with the real architectures, for the benchmarks.

The real configs and tokenizer are read from ../shared/fixtures when that folder is there. In a
fresh clone without it, the configs are built from the published numbers of opt-125m and opt-350m
(same shapes, so the same speed and memory) and the tokenizer is the demo's byte-level BPE; one
line on stderr says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"

# The published architectures (config.json of facebook/opt-125m and facebook/opt-350m).
_PUBLISHED = {
    "opt-125m": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, ffn_dim=3072,
                     word_embed_proj_dim=768, do_layer_norm_before=True),
    "opt-350m": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096,
                     word_embed_proj_dim=512, do_layer_norm_before=False),
}
_said: set[str] = set()


def _say_once(what: str) -> None:
    if what not in _said:
        _said.add(what)
        print(f"note: {FIXTURES} is absent: {what}", file=sys.stderr)


def opt_config(name: str):
    from transformers import OPTConfig

    folder = FIXTURES / "opt-configs" / name
    if (folder / "config.json").is_file():
        return OPTConfig.from_pretrained(folder)
    if name not in _PUBLISHED:
        raise SystemExit(f"error: no config for {name}: use one of {', '.join(_PUBLISHED)}")
    _say_once("using the published opt-125m/opt-350m shapes and the demo tokenizer")
    return OPTConfig(vocab_size=50272, max_position_embeddings=2048, activation_function="relu",
                     pad_token_id=1, bos_token_id=2, eos_token_id=2, dropout=0.0, **_PUBLISHED[name])


def tokenizer():
    folder = FIXTURES / "opt-tokenizer"
    if (folder / "vocab.json").is_file():
        from transformers import GPT2TokenizerFast

        return GPT2TokenizerFast.from_pretrained(folder)
    _say_once("using the published opt-125m/opt-350m shapes and the demo tokenizer")
    from opt_desktop.engine.loading.demo import build_demo_tokenizer

    return build_demo_tokenizer()


def random_model(name: str, seed: int = 0):
    import torch
    from transformers import OPTForCausalLM

    torch.manual_seed(seed)
    return OPTForCausalLM(opt_config(name)).eval()


def save_random_model(name: str, folder: Path, seed: int = 0) -> Path:
    """A checkpoint folder (weights + tokenizer) the app's loader reads like a downloaded one."""
    folder.mkdir(parents=True, exist_ok=True)
    random_model(name, seed).save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    return folder
