"""Speed and memory of the information-flow routes of every position, against their arithmetic floor.

opt-125m (random weights, the real shapes), float32 on the CPU, 128 and 512 tokens (issue 26's
targets: ≤ 2 s and ≤ 30 s). The routes need, in every layer, ‖y_t − A_h[t,s]·v_h[s]W_h‖₁ for every
query t, key s ≤ t and head h: T(T+1)/2 · H · d absolute differences per layer (d the hidden size),
whatever the implementation. The floor printed beside each time is that count at this machine's rate
for the cheapest pass that reads a float once (the sum of an in-cache buffer, on all threads): no
implementation can beat it; and at the rate of the three torch passes the routes take per block
(a multiply-subtract, an absolute value, a sum), measured alone: what this implementation can reach.
The baseline is one plain forward over the same tokens in the same process. Each is the median of
--repeats runs; CPU time (this process's) says what the work costs when other programs share the cores.
Peak memory is the process's resident high-water mark above what it held before (the model and
one plain forward), less the result's own arrays.

    python benchmarks/routes_speed.py [--repeats 3] [--threads N] [--lengths 128 512]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from attribution_patching import median_time
from bench_models import random_model
from opt_desktop.engine.analyses.routes import routes
from opt_desktop.engine.loading.loader import _model_info
from opt_desktop.engine.running.attention import register as register_attention
from opt_desktop.engine.running.loaded import LoadedModel
from opt_desktop.engine.running.memory import return_freed_memory_promptly

TARGETS = {128: 2.0, 512: 30.0}  # seconds, issue 26

return_freed_memory_promptly()  # as the app's engine does


def build() -> LoadedModel:
    model = random_model("opt-125m")
    model.set_attn_implementation(register_attention())  # as the loader does
    return LoadedModel(model=model, tokenizer=None, info=_model_info("opt-125m", model, "float32", "cpu"),
                       device=torch.device("cpu"))


def pass_rate(repeats: int = 20) -> float:
    """Floats per second of one pass summing an in-cache buffer (all threads): reading each float once."""
    buf = torch.randn(1 << 20)
    torch.sum(buf)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.sum(buf)
        best = min(best, time.perf_counter() - t0)
    return buf.numel() / best


def kernel_rate(T: int, D: int, repeats: int = 10) -> float:
    """Differences per second of the routes' own three passes (addcmul, abs_, sum) over one block, alone."""
    from opt_desktop.engine.analyses.routes import BLOCK_ELEMENTS

    q = max(1, min(T, BLOCK_ELEMENTS // (T * D)))
    y, a, p = torch.randn(q, D), torch.rand(q, T), torch.randn(T, D)
    d, n = torch.empty(q, T, D), torch.empty(q, T)

    def once():
        torch.addcmul(y[:, None], a[:, :, None], p[None], value=-1.0, out=d)
        torch.sum(d.abs_(), dim=-1, out=n)

    once()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - t0)
    return d.numel() / best


def differences(config, T: int) -> int:
    """|y_t − part| terms the L1 norms of one run need: T(T+1)/2 · H · d per layer."""
    return config.num_hidden_layers * T * (T + 1) // 2 * config.num_attention_heads * config.hidden_size


def peak_rss() -> int | None:
    """This process's resident high-water mark in bytes (Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak() -> None:
    try:  # Linux: writing 5 to clear_refs resets VmHWM to the current resident size
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = build()
    config = loaded.model.config
    g = torch.Generator().manual_seed(1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"opt-125m (random weights), float32, CPU, {torch.get_num_threads()} threads "
          f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), load average {load:.1f}, "
          f"median of {args.repeats}")
    rate = pass_rate()
    print(f"this machine sums {rate / 1e9:.2f} G floats/s (one pass over an in-cache buffer)")
    routes(loaded, [2] + list(range(100, 120)))  # warm-up
    for T in args.lengths:
        ids = [2] + torch.randint(3, 50000, (T - 1,), generator=g).tolist()
        ids_t = torch.tensor([ids])
        with torch.inference_mode():
            forward = median_time(lambda: loaded.model(ids_t, use_cache=False), args.repeats)
        reset_peak()
        before = peak_rss()
        took = median_time(lambda: routes(loaded, ids), args.repeats)
        after = peak_rss()
        n = differences(config, T)
        kernel = kernel_rate(T, config.hidden_size)
        result_bytes = 4 * config.num_hidden_layers * T * (T * config.num_attention_heads + 3)
        target = TARGETS.get(T)
        verdict = "" if target is None else f"  target ≤ {target:g} s: {'met' if took[0] <= target else 'MISSED'}"
        print(f"\n{T} tokens: routes {took[0]:6.2f} s wall, {took[1]:6.2f} s CPU "
              f"(= {took[0] / forward[0]:.0f} plain forwards of {forward[0] * 1000:.0f} ms){verdict}")
        print(f"  floor: {n / 1e9:.2f} G differences (T(T+1)/2·H·d per layer × {config.num_hidden_layers} layers): "
              f"{n / rate:.2f} s at one fused pass's {rate / 1e9:.1f} G/s; {n / kernel:.2f} s at the "
              f"{kernel / 1e9:.2f} G/s of the three torch passes the routes take, measured alone")
        print(f"  the routes: {n / took[0] / 1e9:.2f} G differences/s of wall time, {n / took[1] / 1e9:.2f} G/s of "
              f"CPU time ({took[1] / took[0]:.2f} cores busy on average)")
        if before is not None and after is not None:
            extra = after - before - result_bytes
            print(f"  peak memory above the model and a plain forward: {(after - before) / 2**20:.0f} MiB, "
                  f"of which the result {result_bytes / 2**20:.0f} MiB and working memory {extra / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
