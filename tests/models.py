"""Tiny random-weight OPT checkpoints of both families, saved to disk like real ones."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
REAL_TOKENIZER = FIXTURES / "opt-tokenizer"
OPT_CONFIGS = FIXTURES / "opt-configs"


def load_tokenizer():
    """The real OPT tokenizer when the shared fixtures are present, else the demo's byte-level BPE."""
    if (REAL_TOKENIZER / "vocab.json").is_file():
        from transformers import GPT2TokenizerFast

        return GPT2TokenizerFast.from_pretrained(REAL_TOKENIZER)
    from opt_desktop.engine.loading.demo import build_demo_tokenizer

    return build_demo_tokenizer()


def tiny_config(family: str, vocab_size: int, context: int = 128):
    """'pre' is shaped like opt-125m (pre-LayerNorm); 'post' like opt-350m (post-LN, project_in/out)."""
    from transformers import OPTConfig

    common = dict(vocab_size=vocab_size, num_hidden_layers=3, num_attention_heads=4, ffn_dim=96,
                  max_position_embeddings=context, pad_token_id=1, bos_token_id=2, eos_token_id=2,
                  dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                  init_std=0.2)  # the default 0.02 gives near-uniform logits, where top-k order is noise
    if family == "pre":
        return OPTConfig(hidden_size=48, word_embed_proj_dim=48, do_layer_norm_before=True, **common)
    return OPTConfig(hidden_size=64, word_embed_proj_dim=32, do_layer_norm_before=False, **common)


def save_tiny_opt(folder: Path, family: str, tokenizer=None, seed: int = 0, context: int = 128) -> Path:
    import torch
    from transformers import OPTForCausalLM

    tokenizer = tokenizer or load_tokenizer()
    vocab = max(len(tokenizer), 8)
    vocab += (-vocab) % 8
    torch.manual_seed(seed)
    model = OPTForCausalLM(tiny_config(family, vocab, context))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run(engine, request):
    """Generate and return (events, finished)."""
    events = []
    finished = engine.generate(request, events.append).result()
    return events, finished


def loaded_of(engine):
    """The LoadedModel an EngineService holds (read on its worker thread)."""
    return engine.call(lambda loaded: loaded).result()


def head_scaled_copy(model, mask=()):
    """An eager-attention copy with each masked head's out_proj weight columns scaled: head scaling with
    no hooks and no engine code, the reference the engine's head masks are checked against."""
    import copy

    import torch

    ref = copy.deepcopy(model)
    ref.set_attn_implementation("eager")
    d = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        for m in mask:
            ref.model.decoder.layers[m.layer].self_attn.out_proj.weight[:, m.head * d:(m.head + 1) * d] *= m.scale
    return ref
