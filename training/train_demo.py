"""Train the app's demo model: a tiny OPT on the documentation that ships with CPython.

    python training/train_demo.py                   # the shipped model, into resources/demo-model
    python training/train_demo.py --steps 100 --out /tmp/demo   # a quick try
    python training/train_demo.py --resume          # go on from the latest checkpoint

Everything is fixed by the seed: the corpus (training/corpus.py), the tokenizer, the batches and
the initial weights. Training checkpoints every few steps (model, optimizer, step, every random
state) outside the repository, so a run can be spread over sittings: `--resume` continues with
the same data order and, on the same thread count, the same weights as an uninterrupted run. See
training/README.md for what it does and why.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from training import corpus, figures  # noqa: E402
from training.checkpoints import Checkpoints, Sitting, rng_states, set_rng_states  # noqa: E402
from training.curriculum import BOS, Batches, Phase, check_replan, lr_at, phase_at, phases  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # OPT's ids: <s>=0, <pad>=1, </s>=2 (BOS and EOS), <unk>=3
# Checkpoints are big (model + optimizer, ~30 MB) and belong to one run: never in the repository.
_STARTED = (time.time(), time.process_time())  # a sitting's time includes reading the corpus and the tokenizer
RUNS = Path(os.environ.get("OPT_DESKTOP_TRAIN_RUNS", Path.home() / ".cache" / "opt-desktop" / "train-runs"))


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
    p.add_argument("--init-std", type=float, default=0.02,
                   help="std of the initial weights (OPT's init_std); see build_model")
    p.add_argument("--phase", action="append", metavar="SPEC",
                   help="a curriculum phase, repeatable, in order: 'steps=N[,context=C][,batch=B][,copy=K]"
                        "[,period=LO-HI][,lr=X][,schedule=run|constant|cosine][,style=fill|insert|noise|skip, or several joined by +]' (unset fields "
                        "take --context, --batch, --induction-rows, 8-48, --lr, 'run': the whole run's cosine, and "
                        "'fill'; see Batches for the styles); with phases, --steps is their sum")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--measure-every", type=int, default=300, help="print the figures every this many steps")
    p.add_argument("--checkpoint-dir", type=Path, default=None,
                   help=f"checkpoints and the sittings log (default {RUNS}/<name of --out>-seed<seed>)")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--keep-every", type=int, default=0,
                   help="also keep the checkpoint of every this many steps (0: keep only the last two)")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from the weights and tokenizer of a model folder written by this script (e.g. the "
                        "shipped demo) instead of fresh ones; its training.json is kept with the checkpoints and "
                        "its sittings counted in the record")
    p.add_argument("--resume", action="store_true", help="go on from the latest checkpoint in --checkpoint-dir")
    p.add_argument("--replan", action="store_true",
                   help="with --resume: accept other phases from the checkpoint's step on (the steps already "
                        "run must be the same phases, at a constant or finished learning rate); recorded")
    p.add_argument("--stop-at", type=int, default=None,
                   help="end this sitting after this step (checkpointed there); --resume goes on")
    args = p.parse_args(argv)
    args.phases = phases(args)
    args.steps = sum(ph.steps for ph in args.phases)
    if args.checkpoint_dir is None:
        args.checkpoint_dir = RUNS / f"{args.out.name}-seed{args.seed}"
    return args


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
        init_std=args.init_std,
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


def optimizer(model, args):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed_positions" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed_positions" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))


# --- checkpoints and sittings -------------------------------------------------------------------

# What must not change between sittings of one run: a resumed run under other settings would be a
# different run under the same name.
_RUN_KEYS = ("seed", "vocab", "hidden", "layers", "heads", "context", "batch", "steps", "lr", "warmup",
             "weight_decay", "induction_rows", "position_init", "position_scale", "init_std", "log_every", "phases", "init_from")


def run_settings(args) -> dict:
    def plain(k, v):
        return [asdict(ph) for ph in v] if k == "phases" else str(v) if isinstance(v, Path) else v
    return {k: plain(k, v) for k, v in vars(args).items() if k in _RUN_KEYS}


def train(model, batches: Batches, args, ckpt: Checkpoints, g: torch.Generator, log=print,
          on_measure=None, started: tuple[float, float] | None = None) -> dict:
    """The training loop, from scratch or from the latest checkpoint (`args.resume`), up to
    `args.stop_at` or the end. Returns the run's state: step, curve, progress, sittings.

    The learning rate is a pure function of the step (lr_at), so the step is the whole scheduler
    state. Measuring along the way runs under saved random states, so it changes nothing."""
    opt = optimizer(model, args)
    state = {"step": 0, "curve": [], "window": [], "progress": [],
             "plans": [{"from_step": 0, "phases": run_settings(args)["phases"]}]}
    if args.resume and ckpt.latest() is not None:
        path = ckpt.latest()
        saved = ckpt.load(path)
        now = run_settings(args)
        ignore = ("phases", "steps") if args.replan else ()
        diff = {k: (saved["settings"].get(k), v) for k, v in now.items()
                if k not in ignore and saved["settings"].get(k) != v}
        if diff:
            raise SystemExit(f"{path} was made with other settings (saved, now): {diff}")
        state = {k: saved[k] for k in ("step", "curve", "window", "progress", "plans")}
        if saved["settings"]["phases"] != now["phases"]:
            before = [Phase(**(ph | {"period": tuple(ph["period"])})) for ph in saved["settings"]["phases"]]
            check_replan(before, args.phases, state["step"], saved["settings"]["steps"] != args.steps)
            state["plans"].append({"from_step": state["step"], "phases": now["phases"]})
            log(f"replanned at step {state['step']}: {args.phases}")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        set_rng_states(saved["rng"], g)
        log(f"resumed from {path} at step {state['step']}")
    elif args.resume:
        log(f"nothing to resume in {ckpt.folder}: starting at step 0")
    elif ckpt.latest() is not None:
        raise SystemExit(f"{ckpt.folder} already holds checkpoints: pass --resume, or another --checkpoint-dir")

    end = args.steps if args.stop_at is None else min(args.steps, args.stop_at)
    sitting = Sitting(ckpt, state["step"], torch.get_num_threads(), started)
    sitting.update(state["step"])

    def checkpoint(step: int) -> None:
        ckpt.save({"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_states(g),
                   "settings": run_settings(args), "curve": state["curve"], "window": state["window"],
                   "progress": state["progress"], "plans": state["plans"]})
        sitting.update(step, checkpointed=True)

    model.config.use_cache = False  # no KV cache while training: nothing reads it
    model.train()
    t0 = time.time()
    for step in range(state["step"], end):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        ids, labels = batches(step)
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state["window"].append(loss.item())
        state["step"] = step + 1
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            mean = sum(state["window"]) / len(state["window"])
            state["window"] = []
            state["curve"].append([step + 1, round(mean, 4)])
            ph = phase_at(step, args.phases)
            log(f"step {step + 1:5d}  loss {mean:.3f}  lr {lr_at(step, args):.2e}  context {ph.context} "
                f"batch {ph.batch} copy {ph.copy}  {(time.time() - t0) / 60:5.1f} min")
            sitting.update(step + 1)
        if on_measure and args.measure_every and (step + 1) % args.measure_every == 0 and step + 1 < args.steps:
            saved_rng = rng_states(g)
            state["progress"].append({"step": step + 1, **on_measure(model)})
            set_rng_states(saved_rng, g)
            model.set_attn_implementation("sdpa")
            model.train()
        if (step + 1) % args.checkpoint_every == 0 or step + 1 == end:
            checkpoint(step + 1)
    if state["step"] == end and ckpt.latest() is None:
        checkpoint(end)  # a sitting with no step to run still leaves a checkpoint to export from
    sitting.update(state["step"], ended="finished" if state["step"] == args.steps else "stopped")
    state["sittings"] = sitting.all()
    return state


def prepare_tokenizer(args, docs, ckpt: Checkpoints):
    """The BPE tokenizer, trained once per run and kept with the checkpoints, so every sitting of a
    run encodes the text with the very same ids."""
    from transformers import PreTrainedTokenizerFast

    folder = ckpt.folder / "tokenizer"
    if args.resume and (folder / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(folder)
    if args.init_from:  # the starting model's own ids
        tokenizer = PreTrainedTokenizerFast.from_pretrained(args.init_from)
        tokenizer.save_pretrained(folder)
        return tokenizer
    tokenizer = train_tokenizer([d.text for d in docs if not d.held_out], args.vocab, args.context)
    tokenizer.save_pretrained(folder)
    return tokenizer


def init_weights(model, folder: Path, ckpt: Checkpoints) -> None:
    """Load a saved model's weights (float16 as shipped, trained on in float32) into `model`, which must
    have its shape; keep its training record with the checkpoints, for the export's record."""
    from transformers import OPTForCausalLM

    saved = OPTForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.load_state_dict(saved.state_dict())
    record = Path(folder) / "training.json"
    kept = ckpt.folder / "init-training.json"
    if record.exists() and not kept.exists():
        ckpt.folder.mkdir(parents=True, exist_ok=True)
        kept.write_text(record.read_text(encoding="utf-8"), encoding="utf-8")
    print(f"initial weights from {folder}", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ckpt = Checkpoints(args.checkpoint_dir, args.keep_every)
    print(f"checkpoints: {ckpt.folder}", flush=True)

    docs = corpus.documents()
    about = corpus.describe(docs)
    train_text = "\n\n".join(d.text for d in docs if not d.held_out)
    held_text = "\n\n".join(d.text for d in docs if d.held_out)
    print(f"corpus: Python {about['python']}, {about['documents']} documents, {about['bytes']:,} bytes, "
          f"sha256 {about['sha256'][:16]}…; held out {about['held_out_documents']} documents "
          f"({about['held_out_characters']:,} characters)", flush=True)

    tokenizer = prepare_tokenizer(args, docs, ckpt)
    vocab_size = len(tokenizer)
    stream = torch.tensor(encode(tokenizer, train_text))
    held_ids = encode(tokenizer, held_text)
    print(f"tokenizer: {vocab_size} tokens; training stream {len(stream):,} tokens, held out {len(held_ids):,}",
          flush=True)

    model = build_model(args, vocab_size)
    if args.init_from:
        init_weights(model, args.init_from, ckpt)  # (a resumed run then loads its checkpoint over them)
    n_params = sum(p.numel() for p in model.parameters())
    tokens = sum(ph.steps * ph.batch * ph.context for ph in args.phases)
    print(f"model: {args.layers} layers × {args.heads} heads, width {args.hidden}, {n_params:,} parameters; "
          f"{args.steps} steps, {tokens:,} tokens ({tokens / len(stream):.1f} passes over the stream)", flush=True)
    for ph in args.phases:
        print(f"  phase: {ph}", flush=True)

    g = torch.Generator().manual_seed(args.seed)
    batches = Batches(stream, args.phases, vocab_size, g)
    state = train(model, batches, args, ckpt, g, log=lambda m: print(m, flush=True),
                  on_measure=lambda m: figures.progress(m, tokenizer, held_ids, args.context), started=_STARTED)
    if state["step"] < args.steps:
        print(f"stopped at step {state['step']} of {args.steps}: go on with --resume", flush=True)
        return 0
    export(model, tokenizer, args, docs, about, held_text, held_ids, len(stream), n_params, tokens, state)
    return 0


def started_from(args) -> dict:
    """For a run that began from a saved model (--init-from): that model's own record in short, so
    the time it took to get here counts both runs."""
    kept = args.checkpoint_dir / "init-training.json"
    if not args.init_from or not kept.exists():
        return {}
    earlier = json.loads(kept.read_text(encoding="utf-8"))
    t = earlier["training"]
    keep = ("steps", "batch", "context", "lr", "tokens_seen", "seconds", "cpu_seconds", "threads", "final_loss")
    return {"started_from": {"folder": str(args.init_from), "training": {k: t[k] for k in keep if k in t},
                             "sittings": t.get("sittings", []), "results": earlier.get("results", {})}}


def export(model, tokenizer, args, docs, about, held_text, held_ids, stream_tokens, n_params, tokens, state):
    # What ships is float16; the figures are measured on those weights, loaded back as the app does.
    args.out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.config.use_cache = True
    model.half().save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    from transformers import AutoTokenizer, OPTForCausalLM

    shipped = OPTForCausalLM.from_pretrained(args.out, dtype=torch.float32, attn_implementation="eager")
    shipped_tok = AutoTokenizer.from_pretrained(args.out)
    results = figures.measure(shipped, shipped_tok, held_ids, args.context)
    (args.out / "heldout.txt").write_text(held_text, encoding="utf-8")
    train_words = sorted({w for d in docs if not d.held_out for w in corpus.words(d.text)})
    (args.out / "corpus-words.txt").write_text("\n".join(train_words) + "\n", encoding="utf-8")

    sittings = state["sittings"]
    wall = sum(s["wall_seconds"] for s in sittings)
    cpu = sum(s["cpu_seconds"] for s in sittings)
    settings = run_settings(args) | {"threads": args.threads}
    record = {
        "what": "A tiny OPTForCausalLM trained on the documentation shipped with CPython (not OPT weights).",
        "script": "training/train_demo.py",
        "corpus": {**about, "held_out_sha256": hashlib.sha256(held_text.encode("utf-8")).hexdigest()},
        "tokenizer": {"kind": "byte-level BPE (tokenizers)", "vocab_size": len(tokenizer),
                      "training_tokens": stream_tokens, "held_out_tokens": len(held_ids)},
        "model": {"parameters": n_params, "layers": args.layers, "heads": args.heads, "hidden": args.hidden,
                  "ffn": 4 * args.hidden, "context": args.context, "dtype": "float16"},
        "training": settings
        | {"tokens_seen": tokens, "seconds": round(wall), "cpu_seconds": round(cpu),
           "final_loss": state["curve"][-1][1], "loss_curve": state["curve"], "progress": state["progress"],
           "sittings": sittings, "plans": state["plans"], "torch": torch.__version__,
           "machine": platform.machine()},
        "results": results,
        **started_from(args),
        "files": {"heldout.txt": "the held-out documents, never trained on",
                  "corpus-words.txt": "every word (run of ASCII letters) of the training documents"},
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    before = started_from(args).get("started_from", {}).get("training", {})
    if before:
        print(f"started from {args.init_from}: {before.get('cpu_seconds', 0) / 60:.1f} CPU minutes before this run")
    print(f"training took {wall / 60:.1f} min over {len(sittings)} sitting(s), {cpu / 60:.1f} CPU minutes; "
          f"final loss {state['curve'][-1][1]:.3f}")
    print(f"held-out perplexity {results['held_out_perplexity']:.1f} (vocabulary {len(tokenizer)}; "
          f"at most {len(tokenizer) / 20:.0f} required)")
    print(f"largest sink weight per layer {results['max_sink_weight_per_layer']}")
    print(f"induction: median rank of the repeated copy {results['induction_median_rank']}")
    print(f"logit lens top-1 agreement per row {results['lens_top1_agreement']}")
    print(f"greedy from {figures.PROMPT!r}: {results['greedy_text']!r}")
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    sys.exit(main())
