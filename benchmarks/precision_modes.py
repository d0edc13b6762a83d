"""Precision modes side by side: decode speed, time to first token, peak memory and accuracy.

For each model, in a process of its own: bare `model.generate` in float32 (the baseline), the engine
in every mode this machine runs with the default inspection on (hidden and attention statistics,
float16 residual rows for the lens), and CTranslate2 in float32 and int8 (`pip install ctranslate2`
to include it; it is not a dependency of the app), converted from the same checkpoint.

Models: the real opt-125m / opt-350m configs (../shared/fixtures/opt-configs) with random weights,
saved as a float16 checkpoint like the Hub's, and the real tokenizer. Each run reads one prompt of
--prompt tokens and writes --tokens more (greedy). Accuracy: mean KL(float32 || mode) of the
next-token distributions and top-1 agreement with float32, teacher-forced over that prompt.

    python benchmarks/precision_modes.py [--models opt-125m opt-350m] [--tokens 64] [--prompt 512]
                                         [--repeats 3] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peak_memory import PeakRSS, anon_rss

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
TARGETS = (  # (model, our runner, CTranslate2 runner, minimum ratio of decode speeds)
    ("opt-350m", "engine bfloat16", "CTranslate2 float32", 1.0),
    ("opt-350m", "engine int8", "CTranslate2 int8", 1.3),
    ("opt-125m", "engine int8", "CTranslate2 int8", 1.0),
)
TEXT = (
    "The village lay at the foot of the mountains, where the river slowed and widened before it reached the sea. "
    "Every spring the fishermen mended their nets on the shore, and the children watched the boats come back in "
    "the evening light. In the town hall an old clock kept time for everyone, and the baker opened before dawn. "
)


# --- measuring ---------------------------------------------------------------------------------------


def rates(t0: float, stamps: list[float]) -> tuple[float, float | None]:
    """Time to first token, and decode tokens/s after it, from the time of each token."""
    ttft = stamps[0] - t0
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None
    return ttft, rate


def stamped_generate(model, ids, n: int) -> tuple[float, list[float]]:
    """Greedy `model.generate` of n tokens: its start time and the time each token came out."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    stamps: list[float] = []

    class Stamp(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            stamps.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, pad_token_id=1,
                       eos_token_id=None, stopping_criteria=StoppingCriteriaList([Stamp()]))
    return t0, stamps


# --- the runners: load(), run(ids, n) -> (ttft, tok/s, n), logprobs(ids) -> (T, V) ---------------------


class BareGenerate:
    name = "bare generate float32"

    def __init__(self, folder: Path):
        self.folder = folder

    def load(self):
        import torch
        from transformers import OPTForCausalLM

        self.model = OPTForCausalLM.from_pretrained(self.folder, dtype=torch.float32).eval()  # SDPA attention

    def run(self, ids, n):
        t0, stamps = stamped_generate(self.model, ids, n)
        return (*rates(t0, stamps), len(stamps))

    def logprobs(self, ids):
        from opt_desktop.engine.loading.accuracy import next_token_logprobs

        import torch

        return next_token_logprobs(self.model, torch.tensor([ids]))


class Engine:
    def __init__(self, folder: Path, mode: str):
        self.folder, self.mode = folder, mode
        self.name = f"engine {mode}"

    def load(self):
        from opt_desktop.engine import LoadRequest
        from opt_desktop.engine.loading.loader import load_model

        self.loaded = load_model(LoadRequest(source=str(self.folder), dtype=self.mode, device="cpu"))

    def run(self, ids, n):
        from opt_desktop.engine import GenerationRequest, GenerationSettings, InspectSettings
        from opt_desktop.engine.messages.job_context import JobContext
        from opt_desktop.engine.running.generate import run_generation

        request = GenerationRequest(prompt_ids=tuple(ids), settings=GenerationSettings(max_new_tokens=n),
                                    inspect=InspectSettings())  # the default inspection
        finished = run_generation(self.loaded, request, JobContext())
        return finished.time_to_first_token_s, finished.tokens_per_s, finished.n_tokens

    def logprobs(self, ids):
        import torch

        from opt_desktop.engine.loading.accuracy import next_token_logprobs

        return next_token_logprobs(self.loaded.model, torch.tensor([ids]))


class CTranslate2:
    def __init__(self, folder: Path, compute_type: str, threads: int, workdir: Path):
        self.folder, self.compute_type, self.threads = folder, compute_type, threads
        self.out = workdir / f"ct2-{compute_type}"
        self.name = f"CTranslate2 {compute_type}"

    def load(self):
        import ctranslate2
        from transformers import AutoTokenizer

        if not self.out.exists():
            ctranslate2.converters.TransformersConverter(str(self.folder)).convert(
                str(self.out), quantization=self.compute_type)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.generator = ctranslate2.Generator(str(self.out), device="cpu", compute_type=self.compute_type,
                                               intra_threads=self.threads)

    def run(self, ids, n):
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        stamps = []
        t0 = time.perf_counter()
        for _ in self.generator.generate_tokens(tokens, max_length=n, min_length=n, sampling_topk=1):
            stamps.append(time.perf_counter())
        return (*rates(t0, stamps), len(stamps))

    def logprobs(self, ids):
        import numpy as np
        import torch

        logits = np.array(self.generator.forward_batch([self.tokenizer.convert_ids_to_tokens(ids)]))[0]
        return torch.log_softmax(torch.from_numpy(logits).float(), dim=-1)


class Remote:
    """A runner in a process of its own, driven over a pipe. CTranslate2 ships its own OpenMP runtime:
    once it has run in a process, torch's threads there slow down by a third or more (measured), so
    it runs apart and still takes its turn between the others."""

    def __init__(self, runner_name: str, folder: Path, threads: int):
        self.name = runner_name
        cmd = [sys.executable, __file__, "--serve", runner_name, "--folder", str(folder), "--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_quiet_env())
        self.folder = folder

    def _ask(self, **message):
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} ended unexpectedly")
            if line.startswith("{"):
                return json.loads(line)

    def load(self):
        self._ask(cmd="load")

    def run(self, ids, n):
        reply = self._ask(cmd="run", ids=list(ids), n=n)
        return reply["ttft"], reply["rate"], reply["n"]

    def logprobs(self, ids):
        import numpy as np
        import torch

        path = self.folder.parent / f"{self.name.replace(' ', '-')}-logprobs.npy"
        self._ask(cmd="logprobs", ids=list(ids), path=str(path))
        return torch.from_numpy(np.load(path))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def serve(runner_name: str, folder: Path, threads: int) -> None:
    """The other end of Remote: one JSON command a line on stdin, one JSON reply a line on stdout."""
    import numpy as np

    runner = next(r for r in make_runners(folder, threads, folder.parent, say=lambda m: None, remote=False)
                  if r.name == runner_name)
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "load":
            runner.load()
            reply = {}
        elif msg["cmd"] == "run":
            ttft, rate, n = runner.run(msg["ids"], msg["n"])
            reply = {"ttft": ttft, "rate": rate, "n": n}
        else:
            np.save(msg["path"], runner.logprobs(msg["ids"]).numpy())
            reply = {}
        print(json.dumps(reply), flush=True)


# --- one model ----------------------------------------------------------------------------------------


def make_checkpoint(name: str, folder: Path):
    import torch
    from transformers import GPT2TokenizerFast, OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    model = OPTForCausalLM(OPTConfig.from_pretrained(FIXTURES / "opt-configs" / name)).to(torch.float16)
    model.save_pretrained(folder)
    tokenizer = GPT2TokenizerFast.from_pretrained(FIXTURES / "opt-tokenizer")
    tokenizer.save_pretrained(folder)
    return tokenizer


def make_runners(folder: Path, threads: int, workdir: Path, say=print, remote: bool = True) -> list:
    """Every runner this machine has, the baseline first; CTranslate2 ones in processes of their own."""
    from opt_desktop.engine.loading import precision

    runners = [BareGenerate(folder)]
    caps = precision.capabilities(probe=True)
    for mode in precision.MODES:
        problem = precision.mode_problem(mode, "cpu", caps)
        if problem:
            say(f"  engine {mode}: skipped ({problem})")
        else:
            runners.append(Engine(folder, mode))
    try:
        import ctranslate2  # noqa: F401

        for t in ("float32", "int8"):
            runners.append(Remote(f"CTranslate2 {t}", folder, threads) if remote
                           else CTranslate2(folder, t, threads, workdir))
    except ImportError:
        say("  CTranslate2: skipped (not installed; pip install ctranslate2 to compare with it)")
    return runners


def prompt_ids(folder: Path, length: int) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)(TEXT * 64)["input_ids"][:length]  # </s> first, like the engine's


def memory_of(runner_name: str, folder: Path, args) -> tuple[float, float]:
    """In a fresh process: MiB above the start at the peak of loading and one run, and kept after it."""
    import torch

    from opt_desktop.engine.running.memory import return_freed_memory_promptly

    return_freed_memory_promptly()
    torch.set_num_threads(args.threads)
    runner = next(r for r in make_runners(folder, args.threads, folder.parent, say=lambda m: None, remote=False)
                  if r.name == runner_name)
    ids = prompt_ids(folder, args.prompt)
    with PeakRSS() as peak:
        runner.load()
        runner.run(ids, 4)
    gc.collect()
    return peak.peak / 2**20, (anon_rss() - peak.start) / 2**20


def bench_model(name: str, folder: Path, args) -> None:
    import torch

    from opt_desktop.engine.loading.accuracy import compare
    from opt_desktop.engine.running.memory import return_freed_memory_promptly

    return_freed_memory_promptly()  # as the app's engine does; every runner here runs under it
    torch.set_num_threads(args.threads)
    ids = prompt_ids(folder, args.prompt)
    runners = make_runners(folder, args.threads, folder.parent)
    for r in runners:
        r.load()
        r.run(ids, 4)  # warm-up
    speed = {r.name: [] for r in runners}
    first = {r.name: [] for r in runners}
    short = {}
    for _ in range(args.repeats):  # interleaved, so drift in the machine's load hits every runner alike
        for r in runners:
            ttft, rate, n = r.run(ids, args.tokens)
            first[r.name].append(ttft)
            speed[r.name].append(rate or float("nan"))
            if n < args.tokens:
                short[r.name] = n
    reference = runners[0].logprobs(ids)
    accuracy = {}
    for r in runners[1:]:
        acc = compare(reference, r.logprobs(ids))
        accuracy[r.name] = (acc.mean_kl, acc.top1_agreement)
    for r in runners:
        if isinstance(r, Remote):
            r.close()
    memory = {}
    if not args.skip_memory:
        for r in runners:
            cmd = [sys.executable, __file__, "--memory-child", r.name, "--folder", str(folder),
                   "--prompt", str(args.prompt), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=_quiet_env())
            memory[r.name] = tuple(float(v) for v in out.stdout.split()[-2:])

    base = statistics.median(speed[runners[0].name])
    print(f"{name}: prompt {len(ids)} tokens, {args.tokens} new tokens, {args.threads} threads, "
          f"median of {args.repeats}")
    print(f"  {'':24} {'decode tok/s':>12} {'x bare':>7} {'TTFT ms':>8} {'peak MiB':>9} {'kept MiB':>9} "
          f"{'mean KL':>9} {'top-1':>6}")
    results = {}
    for r in runners:
        rate = statistics.median(speed[r.name])
        results[r.name] = rate
        kl, top1 = accuracy.get(r.name, (None, None))
        acc = f"{kl:9.2g} {top1:6.1%}" if kl is not None else f"{'(ref)':>9} {'':>6}"
        peak, kept = memory.get(r.name, (float("nan"), float("nan")))
        note = f"  (stopped at eos after {short[r.name]})" if r.name in short else ""
        print(f"  {r.name:24} {rate:12.1f} {rate / base:7.2f} {statistics.median(first[r.name]) * 1e3:8.0f} "
              f"{peak:9.0f} {kept:9.0f} {acc}{note}")
    for model, ours, theirs, minimum in TARGETS:
        if model == name and ours in results and theirs in results:
            ratio = results[ours] / results[theirs]
            print(f"  target: {ours} >= {minimum:.1f}x {theirs}: {ratio:.2f}x "
                  f"({'met' if ratio >= minimum else 'missed'})")


def _quiet_env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["opt-125m", "opt-350m"])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per timed run")
    parser.add_argument("--prompt", type=int, default=512, help="prompt length in tokens")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch and CTranslate2 threads (default: torch's)")
    parser.add_argument("--skip-memory", action="store_true", help="leave out the peak-memory column")
    parser.add_argument("--quick", action="store_true",
                        help="a short smoke run: 16 tokens, 128-token prompt, 1 repeat, no memory column")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.update(_quiet_env())
    if args.quick:
        args.tokens, args.prompt, args.repeats, args.skip_memory = 16, 128, 1, True
    import torch

    args.threads = args.threads or torch.get_num_threads()
    if args.serve:
        torch.set_num_threads(args.threads)
        serve(args.serve, args.folder, args.threads)
        return 0
    if args.memory_child:
        print(*memory_of(args.memory_child, args.folder, args))
        return 0
    if args.child:
        bench_model(args.child, args.folder, args)
        return 0
    print(f"torch {torch.__version__}, CPU, {args.threads} threads; load average {os.getloadavg()[0]:.2f}")
    failed = False
    for name in args.models:  # one process per model: one model's allocations cannot hide another's
        with tempfile.TemporaryDirectory(prefix=f"precision-{name}-") as work:
            folder = Path(work) / "checkpoint"
            make_checkpoint(name, folder)
            cmd = [sys.executable, __file__, "--child", name, "--folder", str(folder), "--tokens", str(args.tokens),
                   "--prompt", str(args.prompt), "--repeats", str(args.repeats), "--threads", str(args.threads)]
            failed |= subprocess.run(cmd + (["--skip-memory"] if args.skip_memory else []),
                                     env=_quiet_env()).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
