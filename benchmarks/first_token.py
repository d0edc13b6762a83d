"""Time to first token with every statistic, and when the prompt's statistics are complete.

For opt-125m and opt-350m (random weights, the real configs: see bench_models.py), prompts of 512
and 2,000 tokens, and each precision mode, one process per model, median of --repeats runs with
every runner taking its turn in each round (so drift in the machine's load hits them alike):

- float32, bfloat16: the engine with its default inspection (hidden and attention statistics,
  residual rows for the lens, the prompt's surprisal) against bare `model.generate` in the same
  dtype (SDPA attention, no capture);
- int8: the engine with its default inspection against the engine's own int8 with inspection off;
- the prompt's statistics (PromptScored, after the first token) against the same baseline's
  first token, which is its prefill;
- CTranslate2 float32 and int8 first token on the same prompt, as an outside anchor (`pip install
  ctranslate2`; it is not a dependency of the app). It runs in a process of its own (see
  precision_modes.Remote), converted from the same checkpoint.

Times are wall-clock from the call to the first token, as a person waits for it.

    python benchmarks/first_token.py [--models opt-125m opt-350m] [--prompts 512 2000]
                                     [--modes float32 bfloat16 int8] [--repeats 3] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_FIRST = 1.10  # engine first token / baseline first token
TARGET_PROMPT = 1.5  # prompt's statistics complete / baseline first token (its prefill)
TEXT = (
    "The village lay at the foot of the mountains, where the river slowed and widened before it reached the sea. "
    "Every spring the fishermen mended their nets on the shore, and the children watched the boats come back in "
    "the evening light. In the town hall an old clock kept time for everyone, and the baker opened before dawn. "
)


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}


# --- runners: run(ids) -> (first token s, prompt statistics s or None) ------------------------------


class Bare:
    """Plain `model.generate` in one dtype: SDPA attention, no hooks."""

    def __init__(self, folder: Path, dtype: str):
        import torch
        from transformers import OPTForCausalLM

        self.name = f"bare generate {dtype}"
        self.model = OPTForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()

    def run(self, ids):
        from precision_modes import stamped_generate

        t0, stamps = stamped_generate(self.model, ids, 1)
        return stamps[0] - t0, None


class Engine:
    """The app's engine, loaded through its loader, with the default inspection or with none."""

    def __init__(self, loaded, dtype: str, inspect: bool):
        self.loaded, self.inspect = loaded, inspect
        self.name = f"engine {dtype}" + ("" if inspect else ", no inspection")

    def run(self, ids):
        from opt_desktop.engine import GenerationRequest, GenerationSettings, InspectSettings
        from opt_desktop.engine.messages.events import PromptScored, TokenGenerated
        from opt_desktop.engine.messages.job_context import JobContext
        from opt_desktop.engine.running.generate import run_generation

        inspect = InspectSettings() if self.inspect else InspectSettings(
            hidden_stats=False, attention_stats=False, keep_residuals=False)
        stamps: dict[type, float] = {}

        def on_event(event):
            if isinstance(event, (TokenGenerated, PromptScored)):
                stamps.setdefault(type(event), time.perf_counter())

        request = GenerationRequest(prompt_ids=tuple(ids), settings=GenerationSettings(max_new_tokens=1),
                                    inspect=inspect)
        t0 = time.perf_counter()
        run_generation(self.loaded, request, JobContext(on_event=on_event))
        return stamps[TokenGenerated] - t0, stamps[PromptScored] - t0


class CTranslate2Remote:
    """CTranslate2 in a process of its own (precision_modes.Remote: its OpenMP runtime slows torch)."""

    def __init__(self, folder: Path, compute_type: str, threads: int):
        from precision_modes import Remote

        self.name = f"CTranslate2 {compute_type}"
        self.remote = Remote(self.name, folder, threads)
        self.remote.load()

    def run(self, ids):
        ttft, _, _ = self.remote.run(ids, 1)
        return ttft, None

    def close(self):
        self.remote.close()


# --- one model, in a process of its own -------------------------------------------------------------


def save_checkpoint(name: str, folder: Path):
    """The random model saved in float16, like the Hub's checkpoints, with its tokenizer."""
    import torch

    from bench_models import random_model, tokenizer

    random_model(name).to(torch.float16).save_pretrained(folder)
    tok = tokenizer()
    tok.save_pretrained(folder)
    return tok


def prompt_of(tok, length: int) -> list[int]:
    ids = tok(TEXT * (length // 20 + 8))["input_ids"]
    if not ids or ids[0] != 2:
        ids = [2] + ids  # </s> first, as the engine feeds OPT
    if len(ids) < length:
        raise SystemExit(f"error: the text gives only {len(ids)} tokens, fewer than {length}")
    return ids[:length]


def make_runners(folder: Path, modes: list[str], threads: int, say=print) -> dict:
    """{mode: (baseline, engine)} for the modes this machine runs, plus "anchor": CTranslate2 runners."""
    from opt_desktop.engine import LoadRequest
    from opt_desktop.engine.loading import precision
    from opt_desktop.engine.loading.loader import load_model

    caps = precision.capabilities(probe=True)
    groups: dict = {}
    for mode in modes:
        problem = precision.mode_problem(mode, "cpu", caps)
        if problem:
            say(f"  {mode}: skipped ({problem})")
            continue
        loaded = load_model(LoadRequest(source=str(folder), dtype=mode, device="cpu"))
        baseline = Engine(loaded, mode, inspect=False) if mode == "int8" else Bare(folder, mode)
        groups[mode] = (baseline, Engine(loaded, mode, inspect=True))
    anchors = []
    try:
        import ctranslate2  # noqa: F401

        anchors = [CTranslate2Remote(folder, t, threads) for t in ("float32", "int8")]
    except ImportError:
        say("  CTranslate2: skipped (not installed; pip install ctranslate2 to compare with it)")
    groups["anchor"] = anchors
    return groups


def bench_model(name: str, args) -> None:
    import torch

    from opt_desktop.engine.running.memory import return_freed_memory_promptly

    return_freed_memory_promptly()  # as the app's engine does; every runner here runs under it
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix=f"first-token-{name}-") as work:
        folder = Path(work) / "checkpoint"
        tok = save_checkpoint(name, folder)
        groups = make_runners(folder, args.modes, args.threads)
        anchors = groups.pop("anchor")
        runners = [r for pair in groups.values() for r in pair] + anchors
        try:
            for length in args.prompts:
                bench_prompt(name, prompt_of(tok, length), groups, anchors, runners, args)
        finally:
            for r in anchors:
                r.close()


def bench_prompt(name: str, ids: list[int], groups: dict, anchors: list, runners: list, args) -> None:
    load_before = os.getloadavg()[0]
    for r in runners:
        r.run(ids)  # warm-up
    first = {r.name: [] for r in runners}
    done = {r.name: [] for r in runners}
    for _ in range(args.repeats):  # interleaved: each runner once per round
        for r in runners:
            t_first, t_done = r.run(ids)
            first[r.name].append(t_first)
            if t_done is not None:
                done[r.name].append(t_done)
    med = {k: statistics.median(v) for k, v in first.items()}
    med_done = {k: statistics.median(v) for k, v in done.items() if v}
    print(f"\n{name}, {len(ids)}-token prompt: {args.threads} threads, median of {args.repeats}, "
          f"load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after")
    print(f"  {'':34} {'first token':>11} {'x base':>7} {'prompt stats':>13} {'x base':>7}")
    verdicts = []
    for mode, (base, engine) in groups.items():
        b = med[base.name]
        print(f"  {base.name:34} {b:10.3f}s {1:7.2f}")
        e, d = med[engine.name], med_done[engine.name]
        print(f"  {engine.name:34} {e:10.3f}s {e / b:7.2f} {d:12.3f}s {d / b:7.2f}")
        verdicts.append(f"{mode} first token {e / b:.2f}x (target <= {TARGET_FIRST:.2f}: "
                        f"{'met' if e / b <= TARGET_FIRST else 'missed'}), prompt statistics {d / b:.2f}x "
                        f"(target <= {TARGET_PROMPT:.1f}: {'met' if d / b <= TARGET_PROMPT else 'missed'})")
    for r in anchors:
        print(f"  {r.name:34} {med[r.name]:10.3f}s")
    for line in verdicts:
        print(f"  target: {line}")
    ct2 = med.get("CTranslate2 int8")
    if ct2 and "bfloat16" in groups:
        ours = med[groups["bfloat16"][1].name]
        print(f"  stretch: engine bfloat16 first token / CTranslate2 int8 = {ours / ct2:.2f} (goal <= 1.00)")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["opt-125m", "opt-350m"])
    parser.add_argument("--prompts", nargs="+", type=int, default=[512, 2000], help="prompt lengths in tokens")
    parser.add_argument("--modes", nargs="+", default=["float32", "bfloat16", "int8"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch and CTranslate2 threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: opt-125m, a 128-token prompt, 1 repeat")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.update(_env())
    if args.quick:
        args.models, args.prompts, args.repeats = args.models[:1], [128], 1
    import torch

    args.threads = args.threads or torch.get_num_threads()
    if args.child:
        bench_model(args.child, args)
        return 0
    print(f"torch {torch.__version__}, CPU, {args.threads} threads; load average {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")
    failed = False
    for name in args.models:  # one process per model: one model's allocations cannot hide another's
        cmd = [sys.executable, __file__, "--child", name, "--prompts", *map(str, args.prompts),
               "--modes", *args.modes, "--repeats", str(args.repeats), "--threads", str(args.threads)]
        failed |= subprocess.run(cmd, env=_env()).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
