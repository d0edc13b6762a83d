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
import random
import re
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from training import corpus, figures  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # OPT's ids: <s>=0, <pad>=1, </s>=2 (BOS and EOS), <unk>=3
BOS = 2
PROMPT = "The return value of"
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
                        "[,period=LO-HI][,lr=X][,schedule=run|constant|cosine][,style=fill|insert]' (unset fields "
                        "take --context, --batch, --induction-rows, 8-48, --lr, 'run': the whole run's cosine, and "
                        "'fill'; see Batches for the styles); with phases, --steps is their sum")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--measure-every", type=int, default=300, help="print the figures every this many steps")
    p.add_argument("--checkpoint-dir", type=Path, default=None,
                   help=f"checkpoints and the sittings log (default {RUNS}/<name of --out>-seed<seed>)")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--keep-every", type=int, default=0,
                   help="also keep the checkpoint of every this many steps (0: keep only the last two)")
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


@dataclass(frozen=True)
class Phase:
    """A stretch of training with one kind of batch: rows of `context` tokens, `copy` of the `batch`
    rows a repeated random sequence (period in `period`), the rest windows of the text; and its
    learning rate: `lr` on the whole run's cosine ('run'), held ('constant'), or decayed over this
    phase alone ('cosine'). The last two depend on nothing after the phase, so a run can be given
    more phases later (--replan) without changing the steps already taken."""
    steps: int
    context: int
    batch: int
    copy: int
    period: tuple[int, int] = (8, 48)
    lr: float = 2e-3
    schedule: str = "run"
    style: str = "fill"


def phases(args) -> list[Phase]:
    if not args.phase:
        return [Phase(args.steps, args.context, args.batch, args.induction_rows, lr=args.lr)]
    out = []
    for spec in args.phase:
        f = dict(item.split("=", 1) for item in spec.split(","))
        lo, hi = (int(v) for v in f.get("period", "8-48").split("-"))
        ph = Phase(int(f["steps"]), int(f.get("context", args.context)), int(f.get("batch", args.batch)),
                   int(f.get("copy", args.induction_rows)), (lo, hi), float(f.get("lr", args.lr)),
                   f.get("schedule", "run"), f.get("style", "fill"))
        if not (ph.context <= args.context and 0 <= ph.copy <= ph.batch and 1 <= lo <= hi < ph.context - 1
                and ph.schedule in ("run", "constant", "cosine") and ph.style in ("fill", "insert")
                and (ph.style == "fill" or 2 * hi < ph.context - 1) and set(f) <= set(Phase.__dataclass_fields__)):
            raise SystemExit(f"bad phase {spec!r}")
        out.append(ph)
    return out


def locate(step: int, plan: list[Phase]) -> tuple[Phase, int]:
    """The phase of `step` and how many of its steps came before."""
    for ph in plan:
        if step < ph.steps:
            return ph, step
        step -= ph.steps
    return plan[-1], plan[-1].steps


def phase_at(step: int, plan: list[Phase]) -> Phase:
    return locate(step, plan)[0]


def done_part(plan: list[Phase], step: int) -> list[Phase]:
    """The phases as far as `step` got: those finished, and the current one cut at `step`."""
    out = []
    for ph in plan:
        if step <= 0:
            break
        out.append(ph if step >= ph.steps else Phase(**(asdict(ph) | {"steps": step})))
        step -= ph.steps
    return out


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


class Batches:
    """Rows of </s> + a window of the training stream at a random offset; the phase's `copy` rows of
    each batch also hold a random sequence of ordinary tokens (length in `period`) more than once:

    - 'fill': the row is the sequence repeated back to back, scored after its first copy. The next
      token always sits one period back, so a model can get far on a positional shortcut (attend
      8-24 back, boost those tokens) and never form an induction head;
    - 'insert': a text window with the sequence written over it twice, at random places, so the
      distance between the copies varies over the whole row and only matching content (an
      induction head) predicts the second copy. The text around is scored as usual; the first copy
      and the second copy's first token (unpredictable) are not.

    Every draw comes from the one generator `g`, whose state the checkpoints keep: a resumed run
    draws the same batches as an uninterrupted one."""

    def __init__(self, stream: torch.Tensor, plan: list[Phase], vocab_size: int, generator: torch.Generator):
        self.stream, self.plan, self.vocab, self.g = stream, plan, vocab_size, generator

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        ph = phase_at(step, self.plan)
        n, copies = ph.context - 1, ph.copy
        starts = torch.randint(0, len(self.stream) - n, (ph.batch - copies,), generator=self.g)
        rows = [torch.cat([torch.tensor([BOS]), self.stream[s:s + n]]) for s in starts.tolist()]
        labels = [r.clone() for r in rows]
        if copies and ph.style == "insert":
            for _ in range(copies):
                row, label = self._insert_row(n, ph.period)
                rows.append(row)
                labels.append(label)
        elif copies:
            ids, copy_labels = self._copy_rows(copies, n, ph.period)
            rows += list(ids)
            labels += list(copy_labels)
        return torch.stack(rows), torch.stack(labels)

    def _insert_row(self, n: int, period_range: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = period_range
        length = int(torch.randint(lo, hi + 1, (1,), generator=self.g))
        seq = torch.randint(4, self.vocab, (length,), generator=self.g)
        s = int(torch.randint(0, len(self.stream) - n, (1,), generator=self.g))
        row = torch.cat([torch.tensor([BOS]), self.stream[s:s + n]])
        # first copy at a, second at b: 1 <= a, a + length <= b, b + length <= n + 1 (row index)
        gap = int(torch.randint(0, n - 2 * length + 1, (1,), generator=self.g))
        a = 1 + int(torch.randint(0, n - 2 * length - gap + 1, (1,), generator=self.g))
        b = a + length + gap
        row[a:a + length] = seq
        row[b:b + length] = seq
        label = row.clone()
        label[a:a + length] = -100
        label[b] = -100
        return row, label

    def _copy_rows(self, count: int, n: int, period_range: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """`count` rows of </s> + a random sequence of ordinary tokens repeated to length n."""
        rows, labels = [], []
        lo, hi = period_range
        for _ in range(count):
            period = int(torch.randint(lo, hi + 1, (1,), generator=self.g))
            seq = torch.randint(4, self.vocab, (period,), generator=self.g)
            row = torch.cat([torch.tensor([BOS]), seq.repeat(n // period + 1)[:n]])
            label = row.clone()
            label[: 1 + period] = -100  # the first copy is unpredictable noise: no loss there
            rows.append(row)
            labels.append(label)
        return torch.stack(rows), torch.stack(labels)


def lr_at(step: int, args) -> float:
    """Linear warm-up, then the phase's learning rate: by default a cosine decay over the whole run
    to a tenth of the peak; or held; or a cosine over the phase alone."""
    ph, k = locate(step, args.phases)
    if step < args.warmup:
        return ph.lr * (step + 1) / args.warmup
    if ph.schedule == "run":
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
    elif ph.schedule == "cosine":
        t = k / max(1, ph.steps - 1)
    else:
        t = 0.0
    return ph.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


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
    sinks = figures.held_out_sink_weights(model, held_ids, context)
    gen = figures.greedy_ids(model, tokenizer, PROMPT)
    text = tokenizer.decode(gen)
    return {
        "held_out_perplexity": figures.held_out_perplexity(model, held_ids, context),
        "max_sink_weight_per_layer": [round(float(v), 4) for v in sinks.max(-1).values],
        "induction_median_rank": figures.induction_median_rank(model, model.config.vocab_size),
        "induction_median_rank_seeds_0_1_2": [figures.induction_median_rank(model, model.config.vocab_size, seed=s)
                                              for s in range(3)],
        "lens_top1_agreement": [round(v, 4) for v in figures.lens_agreement(model, sample)],
        "max_previous_token_score_per_layer":
            [round(float(v), 4) for v in figures.previous_token_scores(model, sample).max(-1).values],
        "max_induction_score_per_layer":
            [round(float(v), 4) for v in figures.induction_scores(model, model.config.vocab_size).max(-1).values],
        "greedy_prompt": PROMPT,
        "greedy_tokens": len(gen),
        "greedy_longest_run": figures.longest_run(gen),
        "greedy_text": text,
    }


def progress(model, tokenizer, held_ids: list[int], context: int) -> dict:
    """A few figures along the way (a slice of the held-out text only), to watch heads form."""
    r = measure(model, tokenizer, held_ids[: 8 * context], context)
    print(f"      held-out ppl (slice) {r['held_out_perplexity']:.1f}  sinks {r['max_sink_weight_per_layer']}  "
          f"induction rank {r['induction_median_rank_seeds_0_1_2']}  lens {r['lens_top1_agreement']}\n"
          f"      heads (max per layer): previous-token {r['max_previous_token_score_per_layer']}  "
          f"induction {r['max_induction_score_per_layer']}\n"
          f"      greedy: {r['greedy_text'][:120]!r}", flush=True)
    return {k: r[k] for k in ("held_out_perplexity", "max_sink_weight_per_layer", "induction_median_rank_seeds_0_1_2",
                              "lens_top1_agreement", "max_previous_token_score_per_layer",
                              "max_induction_score_per_layer", "greedy_text")}


# --- checkpoints and sittings -------------------------------------------------------------------

# What must not change between sittings of one run: a resumed run under other settings would be a
# different run under the same name.
_RUN_KEYS = ("seed", "vocab", "hidden", "layers", "heads", "context", "batch", "steps", "lr", "warmup",
             "weight_decay", "induction_rows", "position_init", "position_scale", "init_std", "log_every", "phases")


def run_settings(args) -> dict:
    return {k: ([asdict(ph) for ph in v] if k == "phases" else v) for k, v in vars(args).items() if k in _RUN_KEYS}


class Checkpoints:
    """ckpt-<step>.pt files in one folder (written whole, then renamed, so a kill mid-write leaves
    the previous one intact), and sittings.json: one entry per sitting, rewritten as it goes, so a
    sitting that was killed still shows the time it spent."""

    def __init__(self, folder: Path, keep_every: int = 0):
        self.folder, self.keep_every = Path(folder), keep_every

    def latest(self) -> Path | None:
        found = sorted(self.folder.glob("ckpt-*.pt"))
        return found[-1] if found else None

    def save(self, state: dict) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"ckpt-{state['step']:06d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        for old in sorted(self.folder.glob("ckpt-*.pt"))[:-2]:  # the last two, and the milestones
            step = int(re.findall(r"\d+", old.stem)[0])
            if not (self.keep_every and step % self.keep_every == 0):
                old.unlink()
        return path

    def load(self, path: Path) -> dict:
        return torch.load(path, weights_only=True)

    def sittings(self) -> list[dict]:
        f = self.folder / "sittings.json"
        return json.loads(f.read_text(encoding="utf-8")) if f.exists() else []

    def write_sittings(self, sittings: list[dict]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / "sittings.json.tmp"
        tmp.write_text(json.dumps(sittings, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.folder / "sittings.json")


class Sitting:
    """This process's share of the run: steps, wall and CPU seconds (all of it: corpus, tokenizer,
    measuring), threads and host, kept up to date in sittings.json."""

    def __init__(self, ckpt: Checkpoints, start_step: int, threads: int, started: tuple[float, float] | None = None):
        self.ckpt = ckpt
        self.wall0, self.cpu0 = started or (time.time(), time.process_time())
        self.earlier = ckpt.sittings()
        self.entry = {"start_step": start_step, "end_step": start_step, "checkpointed_step": start_step,
                      "wall_seconds": 0, "cpu_seconds": 0, "threads": threads, "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ended": "running"}

    def update(self, step: int, checkpointed: bool = False, ended: str | None = None) -> None:
        self.entry["end_step"] = step
        if checkpointed:
            self.entry["checkpointed_step"] = step
        self.entry["wall_seconds"] = round(time.time() - self.wall0, 1)
        self.entry["cpu_seconds"] = round(time.process_time() - self.cpu0, 1)
        if ended:
            self.entry["ended"] = ended
        self.ckpt.write_sittings(self.all())

    def all(self) -> list[dict]:
        return self.earlier + [self.entry]


def rng_states(g: torch.Generator) -> dict:
    # numpy's generator is never used by training; python's random neither, but costs nothing to keep.
    return {"torch": torch.get_rng_state(), "batches": g.get_state(), "python": random.getstate()}


def set_rng_states(states: dict, g: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    g.set_state(states["batches"])
    random.setstate(_as_tuple(states["python"]))


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


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
            _check_replan(before, args.phases, state["step"], saved["settings"]["steps"] != args.steps)
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


def _check_replan(before: list[Phase], after: list[Phase], step: int, total_changed: bool) -> None:
    """A new plan may only change what has not run yet: the same phases up to `step`, and no learning
    rate already used that depended on the parts that change (the whole run's cosine, or the
    cosine of the phase that is cut or extended)."""
    done = done_part(before, step)
    if done != done_part(after, step):
        raise SystemExit(f"--replan: the first {step} steps would change: {done} vs {done_part(after, step)}")
    cur_before, k = locate(step, before)
    cur_after, _ = locate(step, after)
    if total_changed and any(ph.schedule == "run" for ph in done):
        raise SystemExit("--replan: the steps already run used the whole run's cosine, which depends on its length")
    if 0 < k < cur_before.steps and cur_before.schedule == "cosine" and cur_before.steps != cur_after.steps:
        raise SystemExit("--replan: the current phase's cosine depends on its length")


def prepare_tokenizer(args, docs, ckpt: Checkpoints):
    """The BPE tokenizer, trained once per run and kept with the checkpoints, so every sitting of a
    run encodes the text with the very same ids."""
    from transformers import PreTrainedTokenizerFast

    folder = ckpt.folder / "tokenizer"
    if args.resume and (folder / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(folder)
    tokenizer = train_tokenizer([d.text for d in docs if not d.held_out], args.vocab, args.context)
    tokenizer.save_pretrained(folder)
    return tokenizer


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
    n_params = sum(p.numel() for p in model.parameters())
    tokens = sum(ph.steps * ph.batch * ph.context for ph in args.phases)
    print(f"model: {args.layers} layers × {args.heads} heads, width {args.hidden}, {n_params:,} parameters; "
          f"{args.steps} steps, {tokens:,} tokens ({tokens / len(stream):.1f} passes over the stream)", flush=True)
    for ph in args.phases:
        print(f"  phase: {ph}", flush=True)

    g = torch.Generator().manual_seed(args.seed)
    batches = Batches(stream, args.phases, vocab_size, g)
    state = train(model, batches, args, ckpt, g, log=lambda m: print(m, flush=True),
                  on_measure=lambda m: progress(m, tokenizer, held_ids, args.context), started=_STARTED)
    if state["step"] < args.steps:
        print(f"stopped at step {state['step']} of {args.steps}: go on with --resume", flush=True)
        return 0
    export(model, tokenizer, args, docs, about, held_text, held_ids, len(stream), n_params, tokens, state)
    return 0


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
    results = measure(shipped, shipped_tok, held_ids, args.context)
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
        "files": {"heldout.txt": "the held-out documents, never trained on",
                  "corpus-words.txt": "every word (run of ASCII letters) of the training documents"},
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    print(f"training took {wall / 60:.1f} min over {len(sittings)} sitting(s), {cpu / 60:.1f} CPU minutes; "
          f"final loss {state['curve'][-1][1]:.3f}")
    print(f"held-out perplexity {results['held_out_perplexity']:.1f} (vocabulary {len(tokenizer)}; "
          f"at most {len(tokenizer) / 20:.0f} required)")
    print(f"largest sink weight per layer {results['max_sink_weight_per_layer']}")
    print(f"induction: median rank of the repeated copy {results['induction_median_rank']}")
    print(f"logit lens top-1 agreement per row {results['lens_top1_agreement']}")
    print(f"greedy from {PROMPT!r}: {results['greedy_text']!r}")
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {args.out} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    sys.exit(main())
