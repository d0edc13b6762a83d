"""Speed and memory of the information-flow routes of every position, against their arithmetic floor.

opt-125m (random weights, the real shapes), float32 on the CPU, 128 and 512 tokens (issue 26's
targets: ≤ 2 s and ≤ 30 s). The routes need, in every layer, ‖y_t − A_h[t,s]·v_h[s]W_h‖₁ for every
query t, key s ≤ t and head h: T(T+1)/2 · H · d absolute differences per layer (d the hidden size),
whatever the implementation. The floor printed beside each time is that count at this machine's rate
for the cheapest pass that reads a float once (the sum of an in-cache buffer, on all threads): no
implementation can beat it; and at the rate of the three torch passes the routes take per block
(a multiply-subtract, an absolute value, a sum), measured alone: what this implementation can reach.
The baseline, in the same process: bare `model.generate` (SDPA attention, greedy, no hooks) writing the
same run, the first half of its tokens as the prompt and the second half generated; beside it one
plain forward over the same tokens. Each is the median of --repeats runs; CPU time (this process's)
says what the work costs when other programs share the cores, and the load average is printed beside
each length's figures. Peak memory is the process's resident high-water mark above what it held
before (the model, a plain forward and the generate): the result's own arrays and the working memory.

--memory measures the bound of issue 26 (at most 512 MiB above the model, the result included) where
it is largest: opt-350m's shapes (random weights) at its whole context of 2,048 tokens. Its 24 layers
take long on a CPU, so it runs the same shapes with fewer layers (1 and 2 by default) and scales by
arithmetic: the working memory is one layer's, whatever the depth, and the result grows by the same
bytes with each layer (the edge sums' T(T+1)/2 floats, the head parts kept); it prints the measured
peaks, the 24-layer figure so extrapolated, and the figure with the most head parts the result may
hold (256 per node: attention spread evenly over many keys of every head, which random weights do not).

    python benchmarks/routes_speed.py [--repeats 3] [--threads N] [--lengths 128 512]
    python benchmarks/routes_speed.py --memory [--layers 1 2] [--tokens 2048]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from attribution_patching import median_time
from bench_models import opt_config, random_model
from peak_memory import status_bytes
from opt_desktop.engine.analyses.routes import MEMORY_BOUND, routes
from opt_desktop.engine.loading.loader import _model_info
from opt_desktop.engine.running.attention import register as register_attention
from opt_desktop.engine.running.loaded import LoadedModel
from opt_desktop.engine.running.memory import return_freed_memory_promptly

TARGETS = {128: 2.0, 512: 30.0}  # seconds, issue 26

return_freed_memory_promptly()  # as the app's engine does


def build(name: str = "opt-125m", n_layers: int | None = None) -> LoadedModel:
    if n_layers is None:
        model = random_model(name)
    else:
        from transformers import OPTForCausalLM

        config = opt_config(name)
        config.num_hidden_layers = n_layers
        torch.manual_seed(0)
        model = OPTForCausalLM(config).eval()
    model.set_attn_implementation(register_attention())  # as the loader does
    return LoadedModel(model=model, tokenizer=None, info=_model_info(name, model, "float32", "cpu"),
                       device=torch.device("cpu"))


def result_bytes(result) -> int:
    """What the result holds (and what crosses the engine's pipe, less a few hundred bytes of JSON)."""
    return sum(a.nbytes for a in (result.token_ids, result.edges, result.attn_residual, result.mlp,
                                  result.mlp_residual, result.head_counts, result.head_keys, result.head_shares))


def memory(layer_counts: list[int], T: int) -> None:
    """The peak above the model of opt-350m-shaped routes at T tokens, measured with fewer layers and
    scaled to 24 (see the module's docstring)."""
    from opt_desktop.engine.messages.routes_result import MAX_HEAD_PARTS, packed_size

    full = opt_config("opt-350m")
    L_full, H = full.num_hidden_layers, full.num_attention_heads
    g = torch.Generator().manual_seed(1)
    ids = [2] + torch.randint(3, 50000, (T - 1,), generator=g).tolist()
    print(f"opt-350m shapes (random weights, {H} heads, hidden {full.hidden_size}), float32, CPU, {T} tokens, "
          f"{torch.get_num_threads()} threads; bound {MEMORY_BOUND / 2**20:.0f} MiB above the model")
    seen = []
    for n in layer_counts:
        loaded = build("opt-350m", n)
        routes(loaded, ids[:16])  # warm-up: kernels and the allocator's first pages
        reset_peak()
        before = peak_rss()
        t0 = time.perf_counter()
        result = routes(loaded, ids)
        took = time.perf_counter() - t0
        after = peak_rss()
        size = result_bytes(result)
        peak = after - before
        seen.append((n, peak, size, len(result.head_keys)))
        print(f"  {n} layer{'s' if n > 1 else ''}: peak {peak / 2**20:.0f} MiB above the model in {took:.0f} s; "
              f"the result {size / 2**20:.1f} MiB ({len(result.head_keys):,} head parts kept), so working memory "
              f"{(peak - size) / 2**20:.0f} MiB")
        del loaded, result
    n, peak, size, parts = max(seen)
    working = max(p - s for _, p, s, _ in seen)
    per_layer = size / n
    scaled = working + per_layer * L_full
    most_parts = L_full * T * min(MAX_HEAD_PARTS, T * H)
    heads = most_parts * (4 + 4)  # a key (int32) and a share (float32) each
    result = L_full * (4 * packed_size(T) + 3 * 4 * T + 4 * T) + heads
    # While a layer runs, its candidate parts: at most 2 × MAX_HEAD_PARTS a node (those kept, one head's
    # largest) of 12 bytes, in up to three copies as they are joined, and one head's top-k (12 bytes each).
    candidates = T * MAX_HEAD_PARTS * 12 * (2 * 3 + 1)
    worst = result + max(working + candidates, heads)  # the last layer, or the layers' parts joined at the end
    verdict = lambda b: "within the bound" if b <= MEMORY_BOUND else "OVER the bound"  # noqa: E731
    print(f"  {L_full} layers, scaled: working memory {working / 2**20:.0f} MiB (the largest measured) + "
          f"{L_full} × {per_layer / 2**20:.1f} MiB of result = {scaled / 2**20:.0f} MiB: {verdict(scaled)}")
    print(f"  with the most head parts the result may hold ({MAX_HEAD_PARTS} a node, {most_parts:,} in all) and "
          f"a layer's candidates at their most ({candidates / 2**20:.0f} MiB): {worst / 2**20:.0f} MiB: {verdict(worst)}")
    print(f"  the full [L][T][T][H] float32 array would be {4 * L_full * T * T * H / 2**30:.1f} GiB")


def bare_generate(model, ids: list[int]) -> None:
    """Plain `model.generate` of the same run: the first half of `ids` as the prompt, the rest generated."""
    prompt = torch.tensor([ids[:len(ids) // 2]])
    n = len(ids) - prompt.shape[1]
    with torch.inference_mode():
        model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=1,
                       eos_token_id=None)


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
    return status_bytes("VmHWM")


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
    parser.add_argument("--memory", action="store_true", help="measure the memory bound instead (opt-350m shapes)")
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2], help="layer counts measured by --memory")
    parser.add_argument("--tokens", type=int, default=2048, help="tokens for --memory (default 2048)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory:
        memory(args.layers, args.tokens)
        return
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
        loaded.model.set_attn_implementation("sdpa")  # bare: transformers' own attention
        generate = median_time(lambda: bare_generate(loaded.model, ids), args.repeats)
        loaded.model.set_attn_implementation(register_attention())
        reset_peak()
        before = peak_rss()
        sizes = []
        took = median_time(lambda: sizes.append(result_bytes(routes(loaded, ids))), args.repeats)
        after = peak_rss()
        n = differences(config, T)
        kernel = kernel_rate(T, config.hidden_size)
        kept = sizes[-1]
        target = TARGETS.get(T)
        verdict = "" if target is None else f"  target ≤ {target:g} s: {'met' if took[0] <= target else 'MISSED'}"
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"\n{T} tokens (load average {load:.1f}): routes {took[0]:6.2f} s wall, {took[1]:6.2f} s CPU{verdict}")
        print(f"  = {took[0] / generate[0]:.1f}× bare model.generate of the same run ({T // 2} prompt + {T - T // 2} "
              f"generated tokens: {generate[0]:.2f} s wall, {generate[1]:.2f} s CPU; {took[1] / generate[1]:.1f}× "
              f"in CPU time); = {took[0] / forward[0]:.0f} plain forwards of {forward[0] * 1000:.0f} ms")
        print(f"  floor: {n / 1e9:.2f} G differences (T(T+1)/2·H·d per layer × {config.num_hidden_layers} layers): "
              f"{n / rate:.2f} s at one fused pass's {rate / 1e9:.1f} G/s; {n / kernel:.2f} s at the "
              f"{kernel / 1e9:.2f} G/s of the three torch passes the routes take, measured alone")
        print(f"  the routes: {n / took[0] / 1e9:.2f} G differences/s of wall time, {n / took[1] / 1e9:.2f} G/s of "
              f"CPU time ({took[1] / took[0]:.2f} cores busy on average)")
        if before is not None and after is not None:
            extra = after - before - kept
            print(f"  peak memory above the model, a plain forward and the generate: {(after - before) / 2**20:.0f} MiB, "
                  f"of which the result {kept / 2**20:.1f} MiB and working memory {extra / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
