"""What the engine's capture costs, and the previous-token and induction weights within it
(engine/running/role_stats.py), as ratios to bare `model.generate` in the same process.

Random-weight models with the real configs (bench_models.py) read a prompt of natural text that
repeats (first_token.TEXT over and over: every token has many earlier copies, so many more
induction targets per query than ordinary text has). Four ways of running the same greedy tokens,
interleaved, each repeat in another order, so that drift in the machine's load hits them alike:

* bare: `model.generate` with transformers' SDPA attention, no hooks, no events;
* engine, nothing captured: run_generation with every statistic off;
* engine, without the two weights: every statistic on, the role weights replaced by NaN;
* engine, everything: the default inspection (all statistics, residual rows for the lens).

Each is timed for one token (the prefill; for the engine also the prompt's statistics, computed
after the first token) and for 1 + n tokens; the difference over n is the time a decode step takes.

    python benchmarks/role_stats_cost.py [--models opt-125m] [--prompt 512] [--tokens 16] [--repeats 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from bench_models import random_model, tokenizer  # noqa: E402
from first_token import prompt_of  # noqa: E402
from opt_desktop.engine import GenerationRequest, GenerationSettings, InspectSettings  # noqa: E402
from opt_desktop.engine.loading.loader import _model_info  # noqa: E402
from opt_desktop.engine.messages.job_context import JobContext  # noqa: E402
from opt_desktop.engine.running import capture  # noqa: E402
from opt_desktop.engine.running.attention import register  # noqa: E402
from opt_desktop.engine.running.generate import run_generation  # noqa: E402
from opt_desktop.engine.running.loaded import LoadedModel  # noqa: E402
from opt_desktop.engine.running.memory import return_freed_memory_promptly  # noqa: E402

REAL = capture.role_stats
NOTHING = InspectSettings(hidden_stats=False, attention_stats=False, keep_residuals=False)
MODES = ("bare", "engine, nothing captured", "engine, without the two weights", "engine, everything")

return_freed_memory_promptly()  # as the app's engine does: every mode runs under it


def _nan_roles(w, offset, targets):
    return torch.full((2, *w.shape[:-1]), float("nan"), device=w.device)


def _bare(model, ids, n: int) -> int:
    model.set_attn_implementation("sdpa")
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, pad_token_id=1, eos_token_id=None)
    return out.shape[1] - len(ids)


def _engine(loaded, ids, n: int, mode: str) -> int:
    loaded.model.set_attn_implementation(register())
    capture.role_stats = _nan_roles if mode == MODES[2] else REAL
    inspect = NOTHING if mode == MODES[1] else InspectSettings()
    try:
        request = GenerationRequest(prompt_ids=tuple(ids), settings=GenerationSettings(max_new_tokens=n),
                                    inspect=inspect)
        return run_generation(loaded, request, JobContext()).n_tokens
    finally:
        capture.role_stats = REAL


def _role_work(config, ids, repeats: int) -> tuple[float, float]:
    """Seconds the two weights' own work takes, alone (median of `repeats`): for the prompt, its targets
    and every layer's (H, P, P) weights; for a decode step, its targets and the (L, H, 1, P + 1) weights.
    Far below the machine's noise in the runs above, so measured here as well."""
    from opt_desktop.engine.running.role_stats import InductionTargets, induction_pairs

    L, H, P = config.num_hidden_layers, config.num_attention_heads, len(ids)
    weights = torch.softmax(torch.randn(H, P, P), -1)
    step = torch.softmax(torch.randn(L, H, 1, P + 1), -1)
    ids = torch.tensor(ids + ids[1:2])
    prompt, decode = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        targets = InductionTargets(ids[:P])
        for _ in range(L):
            REAL(weights, 0, targets.block(0, P, weights.device))
        t1 = time.perf_counter()
        REAL(step, P, induction_pairs(ids, P, P + 1))
        t2 = time.perf_counter()
        prompt.append(t1 - t0)
        decode.append(t2 - t1)
    return statistics.median(prompt), statistics.median(decode)


def _timed(loaded, ids, n: int, mode: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    made = _bare(loaded.model, ids, n) if mode == MODES[0] else _engine(loaded, ids, n, mode)
    return time.perf_counter() - t0, made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["opt-125m"])
    ap.add_argument("--prompt", type=int, default=512, help="prompt tokens")
    ap.add_argument("--tokens", type=int, default=16, help="decode steps timed")
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args()
    tok = tokenizer()
    ids = prompt_of(tok, args.prompt)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; {args.prompt}-token repeating prompt, "
          f"{args.tokens} decode steps, median of {args.repeats}")
    for name in args.models:
        model = random_model(name)
        loaded = LoadedModel(model=model, tokenizer=tok, info=_model_info(name, model, "float32", "cpu"),
                             device=torch.device("cpu"))
        for mode in MODES:  # warm-up
            _timed(loaded, ids[:64], 3, mode)
        first: dict[str, list[float]] = {m: [] for m in MODES}
        step: dict[str, list[float]] = {m: [] for m in MODES}
        short = set()
        for r in range(args.repeats):
            for mode in MODES[r % 4:] + MODES[:r % 4]:  # each repeat in another order: no mode always follows another
                t1, _ = _timed(loaded, ids, 1, mode)
                tn, made = _timed(loaded, ids, 1 + args.tokens, mode)
                if made != 1 + args.tokens:
                    short.add(mode)  # the engine stops at </s>; bare generate was told not to
                first[mode].append(t1)
                step[mode].append((tn - t1) / max(made - 1, 1))
        f = {m: statistics.median(v) for m, v in first.items()}
        s = {m: statistics.median(v) for m, v in step.items()}
        print(f"\n{name}: {'':32} first token (+ prompt statistics)    a decode step")
        for mode in MODES:
            print(f"  {mode:38} {f[mode]:7.2f} s  {f[mode] / f['bare']:5.2f}x bare   "
                  f"{s[mode] * 1e3:7.1f} ms  {s[mode] / s['bare']:5.2f}x bare")
        with_roles, without = MODES[3], MODES[2]
        print(f"  the two weights, everything minus without: {(f[with_roles] - f[without]) / f['bare']:+.1%} of bare's "
              f"first token, {(s[with_roles] - s[without]) / s['bare']:+.1%} of bare's decode step")
        p_work, d_work = _role_work(model.config, ids, 5 * args.repeats)
        print(f"  the two weights' own work, timed alone: {p_work * 1e3:.1f} ms for the prompt "
              f"({p_work / f['bare']:.1%} of bare's first token), {d_work * 1e3:.2f} ms a decode step "
              f"({d_work / s['bare']:.1%} of bare's)")
        if short:
            print(f"  note: {', '.join(sorted(short))} stopped early at </s> in some runs (times per step made)")


if __name__ == "__main__":
    main()
