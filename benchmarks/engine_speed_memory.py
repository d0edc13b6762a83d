"""Decode speed and prefill memory of the engine, as ratios to bare `model.generate` in the same process.

Random-weight models with the real opt-125m / opt-350m configs (../shared/fixtures/opt-configs).
Speed: decode tokens/s with the default inspection on (all statistics, float16 residual rows for the
lens; no full attention rows) against `model.generate` with SDPA attention and no capture.
Memory: peak resident memory above the start while prefilling a 2,047-token prompt (+1 token), with
statistics on against the same prefill without them.

    python benchmarks/engine_speed_memory.py [--models opt-125m opt-350m] [--tokens 48] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import GPT2TokenizerFast, OPTConfig, OPTForCausalLM

from opt_desktop.engine import GenerationRequest, GenerationSettings, InspectSettings
from opt_desktop.engine.running.attention import register as register_attention
from opt_desktop.engine.messages.job_context import JobContext
from opt_desktop.engine.running.generate import run_generation
from opt_desktop.engine.running.loaded import LoadedModel
from opt_desktop.engine.loading.loader import _model_info
from opt_desktop.engine.running.memory import return_freed_memory_promptly
from peak_memory import PeakRSS

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


# As the app's engine does (EngineService): both the baseline and the engine run under it.
return_freed_memory_promptly()


def build(name: str):
    config = OPTConfig.from_pretrained(FIXTURES / "opt-configs" / name)
    torch.manual_seed(0)
    model = OPTForCausalLM(config).eval()
    tokenizer = GPT2TokenizerFast.from_pretrained(FIXTURES / "opt-tokenizer")
    return LoadedModel(model=model, tokenizer=tokenizer, info=_model_info(name, model, "float32", "cpu"),
                       device=torch.device("cpu"))


def bare_decode_rate(model, ids, n: int) -> float:
    """tokens/s of the decode steps alone: (time for 1+n tokens - time for 1 token) / n."""
    model.set_attn_implementation("sdpa")
    kwargs = dict(do_sample=False, pad_token_id=1, eos_token_id=None)
    with torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=1, **kwargs)
        t1 = time.perf_counter()
        model.generate(ids, max_new_tokens=n + 1, **kwargs)
        t2 = time.perf_counter()
    return n / ((t2 - t1) - (t1 - t0))


def engine_decode_rate(loaded, prompt_ids, n: int, inspect: InspectSettings) -> tuple[float, int]:
    loaded.model.set_attn_implementation(register_attention())
    request = GenerationRequest(prompt_ids=tuple(prompt_ids), settings=GenerationSettings(max_new_tokens=n + 1),
                                inspect=inspect)
    finished = run_generation(loaded, request, JobContext())
    return finished.tokens_per_s, finished.n_tokens


def prefill_peak(loaded, length: int, with_stats: bool) -> float:
    """MiB above the start while prefilling `length` tokens (+1 generated), with or without statistics."""
    model = loaded.model
    ids = [2] + [(i * 7919) % 50000 + 4 for i in range(length - 1)]
    if not with_stats:
        model.set_attn_implementation("sdpa")
        with PeakRSS(trim=True) as peak, torch.inference_mode():
            model.generate(torch.tensor([ids]), max_new_tokens=1, do_sample=False, pad_token_id=1)
        return peak.peak / 2**20
    model.set_attn_implementation(register_attention())
    request = GenerationRequest(prompt_ids=tuple(ids), settings=GenerationSettings(max_new_tokens=1))
    with PeakRSS(trim=True) as peak:
        run_generation(loaded, request, JobContext())
    return peak.peak / 2**20


def memory_ratio(name: str, length: int) -> tuple[float, float]:
    """Each prefill in a fresh process: the allocator's leftovers from one run must not hide the other's."""
    peaks = []
    for mode in ("bare", "stats"):
        out = subprocess.run([sys.executable, __file__, "--memory-child", mode, "--models", name,
                              "--memory-prompt", str(length)], capture_output=True, text=True, check=True)
        peaks.append(float(out.stdout.strip().splitlines()[-1]))
    return peaks[0], peaks[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["opt-125m", "opt-350m"])
    parser.add_argument("--tokens", type=int, default=48, help="decode steps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--memory-prompt", type=int, default=2047)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", choices=["bare", "stats"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(prefill_peak(build(args.models[0]), args.memory_prompt, args.memory_child == "stats"))
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    for name in args.models:
        loaded = build(name)
        prompt = loaded.tokenizer("The history of the transformer architecture begins")["input_ids"]
        prompt = (prompt * 8)[: args.prompt_tokens]
        ids = torch.tensor([prompt])
        bare_decode_rate(loaded.model, ids, 4)  # warm-up
        engine_decode_rate(loaded, prompt, 4, InspectSettings())
        bare, ours, off = [], [], []
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
            bare.append(bare_decode_rate(loaded.model, ids, args.tokens))
            rate, n = engine_decode_rate(loaded, prompt, args.tokens, InspectSettings())
            ours.append(rate)
            rate_off, _ = engine_decode_rate(loaded, prompt, args.tokens, InspectSettings(
                hidden_stats=False, attention_stats=False, keep_residuals=False))
            off.append(rate_off)
            if n != args.tokens + 1:
                print(f"  note: the engine stopped after {n} tokens (eos)")
        b, o, f = statistics.median(bare), statistics.median(ours), statistics.median(off)
        print(f"{name}: decode bare generate {b:.1f} tok/s | engine, default inspection {o:.1f} tok/s "
              f"(ratio {o / b:.3f}) | engine, no statistics {f:.1f} tok/s (ratio {f / b:.3f})")
        if not args.skip_memory:
            base_mb, ours_mb = memory_ratio(name, args.memory_prompt)
            print(f"{name}: prefill of {args.memory_prompt} tokens, peak memory above start: bare {base_mb:.0f} MiB | "
                  f"with statistics {ours_mb:.0f} MiB (ratio {ours_mb / max(base_mb, 1):.2f})")
        del loaded
        gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
