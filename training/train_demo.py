"""Train the app's demo model: a tiny OPT on the documentation that ships with CPython.

    python training/train_demo.py                   # the shipped model, into resources/demo-model
    python training/train_demo.py --steps 100 --out /tmp/demo   # a quick try

Everything is fixed by the seed: the corpus (training/corpus.py), the tokenizer, the batches and
the initial weights. It runs on 2 CPU threads. See training/README.md for what it does and why.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from training import corpus, figures  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # OPT's ids: <s>=0, <pad>=1, </s>=2 (BOS and EOS), <unk>=3
BOS = 2
PROMPT = "The return value of"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "resources" / "demo-model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--context", type=int, default=256, help="training window and the model's context length")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--induction-rows", type=int, default=2,
                   help="rows of each batch that are a random token sequence repeated (teaches copying)")
    p.add_argument("--position-init", choices=["sinusoid", "random"], default="sinusoid",
                   help="how the learned position embeddings start (see _sinusoid_positions)")
    p.add_argument("--position-scale", type=float, default=0.05)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--measure-every", type=int, default=300, help="print the figures every this many steps")
    return p.parse_args(argv)


# --- tokenizer ---------------------------------------------------------------------------------

def train_tokenizer(texts: list[str], vocab_size: int, context: int):
    """Byte-level BPE like OPT's (GPT-2's), with OPT's special ids and its leading </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", BOS)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", model_max_length=context)


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


# --- model and batches ---------------------------------------------------------------------------

def build_model(args, vocab_size: int):
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(
        vocab_size=vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers, ffn_dim=4 * args.hidden,
        num_attention_heads=args.heads, max_position_embeddings=args.context, word_embed_proj_dim=args.hidden,
        do_layer_norm_before=True, pad_token_id=1, bos_token_id=BOS, eos_token_id=BOS,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, tie_word_embeddings=True,
    )
    model = OPTForCausalLM._from_config(config, attn_implementation="sdpa")
    if args.position_init == "sinusoid":
        _sinusoid_positions(model, args.position_scale)
    return model


@torch.no_grad()
def _sinusoid_positions(model, scale: float) -> None:
    """Start OPT's learned position embeddings at the transformer's sinusoids (still trained).

    With random starting positions a head needs a long time to learn "attend to the previous
    token"; sinusoids make any fixed offset a rotation a query/key map can express at once, so
    previous-token and induction heads form within this short training.
    """
    table = model.model.decoder.embed_positions.weight  # OPT's table is offset by 2 rows
    n, d = table.shape[0] - 2, table.shape[1]
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float32) / d)
    table[2:, 0::2] = torch.sin(pos * freq) * scale
    table[2:, 1::2] = torch.cos(pos * freq) * scale


class Batches:
    """Rows of </s> + a window of the training stream at a random offset; `induction_rows` rows of
    each batch are </s> + a random token sequence repeated, scored only after its first copy."""

    def __init__(self, stream: torch.Tensor, args, vocab_size: int, generator: torch.Generator):
        self.stream, self.args, self.vocab, self.g = stream, args, vocab_size, generator

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, n = self.args, self.args.context - 1
        copies = a.induction_rows
        starts = torch.randint(0, len(self.stream) - n, (a.batch - copies,), generator=self.g)
        rows = [torch.cat([torch.tensor([BOS]), self.stream[s:s + n]]) for s in starts.tolist()]
        labels = [r.clone() for r in rows]
        if copies:
            ids, copy_labels = self._copy_rows(copies, n)
            rows += list(ids)
            labels += list(copy_labels)
        return torch.stack(rows), torch.stack(labels)

    def _copy_rows(self, count: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` rows of </s> + a random sequence of 8-48 ordinary tokens repeated to length n."""
        rows, labels = [], []
        for _ in range(count):
            period = int(torch.randint(8, 49, (1,), generator=self.g))
            seq = torch.randint(4, self.vocab, (period,), generator=self.g)
            row = torch.cat([torch.tensor([BOS]), seq.repeat(n // period + 1)[:n]])
            label = row.clone()
            label[: 1 + period] = -100  # the first copy is unpredictable noise: no loss there
            rows.append(row)
            labels.append(label)
        return torch.stack(rows), torch.stack(labels)


def lr_at(step: int, args) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def optimizer(model, args):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed_positions" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed_positions" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))


# --- figures -------------------------------------------------------------------------------------

def measure(model, tokenizer, held_ids: list[int], context: int) -> dict:
    """The figures the tests assert, on the model as given (eager attention for the weights)."""
    model.eval()
    model.set_attn_implementation("eager")
    sample = torch.tensor([[BOS] + held_ids[: context - 1]])
    sinks = figures.sink_weights(model, sample)
    gen = figures.greedy_ids(model, tokenizer, PROMPT)
    text = tokenizer.decode(gen)
    return {
        "held_out_perplexity": figures.held_out_perplexity(model, held_ids, context),
        "max_sink_weight_per_layer": [round(float(v), 4) for v in sinks.max(-1).values],
        "induction_median_rank": figures.induction_median_rank(model, model.config.vocab_size),
        "lens_top1_agreement": [round(v, 4) for v in figures.lens_agreement(model, sample)],
        "greedy_prompt": PROMPT,
        "greedy_tokens": len(gen),
        "greedy_longest_run": figures.longest_run(gen),
        "greedy_text": text,
    }


def progress(model, tokenizer, held_ids: list[int], context: int) -> None:
    """A few figures along the way (a slice of the held-out text only), to watch heads form."""
    r = measure(model, tokenizer, held_ids[: 8 * context], context)
    print(f"      held-out ppl (slice) {r['held_out_perplexity']:.1f}  sinks {r['max_sink_weight_per_layer']}  "
          f"induction rank {r['induction_median_rank']}  lens {r['lens_top1_agreement']}\n"
          f"      greedy: {r['greedy_text'][:120]!r}", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.time()

    docs = corpus.documents()
    about = corpus.describe(docs)
    train_text = "\n\n".join(d.text for d in docs if not d.held_out)
    held_text = "\n\n".join(d.text for d in docs if d.held_out)
    print(f"corpus: Python {about['python']}, {about['documents']} documents, {about['bytes']:,} bytes, "
          f"sha256 {about['sha256'][:16]}…; held out {about['held_out_documents']} documents "
          f"({about['held_out_characters']:,} characters)", flush=True)

    tokenizer = train_tokenizer([d.text for d in docs if not d.held_out], args.vocab, args.context)
    vocab_size = len(tokenizer)
    stream = torch.tensor(encode(tokenizer, train_text))
    held_ids = encode(tokenizer, held_text)
    print(f"tokenizer: {vocab_size} tokens; training stream {len(stream):,} tokens, held out {len(held_ids):,}",
          flush=True)

    model = build_model(args, vocab_size)
    n_params = sum(p.numel() for p in model.parameters())
    tokens_per_step = args.batch * args.context
    print(f"model: {args.layers} layers × {args.heads} heads, width {args.hidden}, {n_params:,} parameters; "
          f"{args.steps} steps of {tokens_per_step:,} tokens ({args.steps * tokens_per_step / len(stream):.1f} "
          f"passes over the stream)", flush=True)

    g = torch.Generator().manual_seed(args.seed)
    batches = Batches(stream, args, vocab_size, g)
    opt = optimizer(model, args)
    curve, window = [], []
    train_started, cpu_started = time.time(), time.process_time()
    model.train()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        ids, labels = batches(step)
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        window.append(loss.item())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            mean = sum(window) / len(window)
            window.clear()
            curve.append([step + 1, round(mean, 4)])
            elapsed = time.time() - train_started
            print(f"step {step + 1:5d}  loss {mean:.3f}  lr {lr_at(step, args):.2e}  {elapsed / 60:5.1f} min",
                  flush=True)
        if args.measure_every and (step + 1) % args.measure_every == 0 and step + 1 < args.steps:
            progress(model, tokenizer, held_ids, args.context)
            model.set_attn_implementation("sdpa")
            model.train()
    train_seconds = time.time() - train_started
    cpu_seconds = time.process_time() - cpu_started  # on a busy machine, CPU time / threads is the fair figure

    # What ships is float16; the figures are measured on those weights, loaded back as the app does.
    args.out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.half().save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    from transformers import AutoTokenizer, OPTForCausalLM

    shipped = OPTForCausalLM.from_pretrained(args.out, dtype=torch.float32, attn_implementation="eager")
    shipped_tok = AutoTokenizer.from_pretrained(args.out)
    results = measure(shipped, shipped_tok, held_ids, args.context)
    (args.out / "heldout.txt").write_text(held_text, encoding="utf-8")
    train_words = sorted({w for d in docs if not d.held_out for w in corpus.words(d.text)})
    (args.out / "corpus-words.txt").write_text("\n".join(train_words) + "\n", encoding="utf-8")

    record = {
        "what": "A tiny OPTForCausalLM trained on the documentation shipped with CPython (not OPT weights).",
        "script": "training/train_demo.py",
        "corpus": {**about, "held_out_sha256": hashlib.sha256(held_text.encode("utf-8")).hexdigest()},
        "tokenizer": {"kind": "byte-level BPE (tokenizers)", "vocab_size": vocab_size,
                      "training_tokens": len(stream), "held_out_tokens": len(held_ids)},
        "model": {"parameters": n_params, "layers": args.layers, "heads": args.heads, "hidden": args.hidden,
                  "ffn": 4 * args.hidden, "context": args.context, "dtype": "float16"},
        "training": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"}
        | {"tokens_seen": args.steps * tokens_per_step, "seconds": round(train_seconds),
           "cpu_seconds": round(cpu_seconds),
           "final_loss": curve[-1][1], "loss_curve": curve, "torch": torch.__version__,
           "machine": f"{platform.machine()}, {args.threads} threads"},
        "results": results,
        "files": {"heldout.txt": "the held-out documents, never trained on",
                  "corpus-words.txt": "every word (run of ASCII letters) of the training documents"},
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    print(f"training took {train_seconds / 60:.1f} min ({cpu_seconds / 60:.1f} CPU minutes on {args.threads} threads; "
          f"{(time.time() - started) / 60:.1f} min in all); "
          f"final loss {curve[-1][1]:.3f}")
    print(f"held-out perplexity {results['held_out_perplexity']:.1f} (vocabulary {vocab_size}; "
          f"at most {vocab_size / 20:.0f} required)")
    print(f"largest sink weight per layer {results['max_sink_weight_per_layer']}")
    print(f"induction: median rank of the repeated copy {results['induction_median_rank']}")
    print(f"logit lens top-1 agreement per row {results['lens_top1_agreement']}")
    print(f"greedy from {PROMPT!r}: {results['greedy_text']!r}")
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
