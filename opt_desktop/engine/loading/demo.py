"""The built-in models, which need no network and no download, so the app and the CLI always have
something to run.

- `demo`: a tiny OPT trained on the documentation that ships with CPython by training/train_demo.py,
  shipped as a `save_pretrained` folder (resources/demo-model) and loaded like any checkpoint.
- `demo-random`: a tiny OPT with random weights and a byte-level BPE tokenizer made here in code.
  Its text is meaningless and its distributions near-uniform; tests use it where they need that.
"""

from __future__ import annotations

from pathlib import Path

from ...assets import resource

DEMO_LABEL = "demo — tiny model trained on Python's documentation (not OPT weights)"
DEMO_RANDOM_LABEL = "demo-random (tiny OPT, random weights)"


def demo_folder() -> Path:
    """The trained demo model's folder: config, float16 weights, tokenizer and its training record."""
    return resource("demo-model")


# OPT's special tokens, at OPT's ids: <s>=0, <pad>=1, </s>=2 (BOS and EOS), <unk>=3.
_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]

# A little English to learn merges from, so tokens look like word pieces rather than single bytes.
_CORPUS = """\
The quick brown fox jumps over the lazy dog. A language model predicts the next token from the ones
before it. Each layer of the transformer reads the residual stream, attends to earlier positions and
writes its update back. Attention heads look at the beginning of the sequence, at the previous token,
or at words that matter for what comes next. The logit lens reads every layer through the output head.
Hello, my dog is cute. It was the best of times, it was the worst of times. Once upon a time there was
a small model that lived on a laptop and wrote stories about the weather, the sea and the mountains.
"""


def build_demo_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS], trainer=trainer)
    # Like OPT: every sequence starts with </s>.
    tok.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="</s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        model_max_length=512,
    )


def build_demo_model(tokenizer, dtype=None):
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=4, ffn_dim=256, num_attention_heads=4,
        max_position_embeddings=512, word_embed_proj_dim=64, do_layer_norm_before=True,
        pad_token_id=1, bos_token_id=2, eos_token_id=2, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0,
    )
    # Same weights every time, without disturbing the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = OPTForCausalLM(config)
        _favour_printable(model, tokenizer)
    if dtype is not None:
        model = model.to(dtype)
    model._name_or_path = "demo-random"
    return model.eval()


def _favour_printable(model, tokenizer) -> None:
    """Shrink the embeddings (tied to the output head) of tokens that are not printable text.

    Random weights otherwise sample lone continuation bytes as often as letters, and the demo's text
    would be mostly U+FFFD. This keeps every byte reachable, only less likely.
    """
    import torch

    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        for token_id in range(emb.shape[0]):
            text = tokenizer.decode([token_id])
            if not text or "\ufffd" in text or not text.isprintable():
                emb[token_id] *= 0.1
        emb[2] *= 3.0  # keep </s> reachable so runs can end by themselves
