"""Speed of attribution and activation patching on opt-125m, as ratios to one plain forward pass.

Random weights with the real opt-125m config (../shared/fixtures/opt-configs), float32 on the CPU.
- Integrated gradients, 32 Gauss-Legendre steps, for a 100-token context (the issue's target: < 3 s on 2 cores).
- The full residual patching map (13 rows x 20 positions) for a 20-token prompt (target: < 10 s), and the
  same with the layers x heads map added.
Each is the median of --repeats runs; the baseline is `model(ids)` (logits at every position) on the
same tokens in the same process, so the ratio says how many plain forwards the analysis costs.

    python benchmarks/attribution_patching.py [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from transformers import OPTConfig, OPTForCausalLM

from opt_desktop.engine.running.attention import register as register_attention
from opt_desktop.engine.analyses.attribution import attribute
from opt_desktop.engine.running.loaded import LoadedModel
from opt_desktop.engine.loading.loader import _model_info
from opt_desktop.engine.running.memory import return_freed_memory_promptly
from opt_desktop.engine.analyses.patching import patch

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
# facebook/opt-125m's config.json, for a checkout without the shared fixtures.
OPT_125M = dict(vocab_size=50272, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, ffn_dim=3072,
                max_position_embeddings=2048, word_embed_proj_dim=768, do_layer_norm_before=True,
                activation_function="relu", pad_token_id=1, bos_token_id=2, eos_token_id=2)

return_freed_memory_promptly()  # as the app's engine does


def build() -> LoadedModel:
    folder = FIXTURES / "opt-configs" / "opt-125m"
    if (folder / "config.json").is_file():
        config = OPTConfig.from_pretrained(folder)
    else:
        print(f"{folder} is absent: using opt-125m's config from the numbers in this script")
        config = OPTConfig(**OPT_125M)
    torch.manual_seed(0)
    model = OPTForCausalLM(config).eval()
    model.set_attn_implementation(register_attention())  # as the loader does
    return LoadedModel(model=model, tokenizer=None, info=_model_info("opt-125m", model, "float32", "cpu"),
                       device=torch.device("cpu"))


def median_time(fn, repeats: int) -> tuple[float, float]:
    """Median (wall seconds, this process's CPU seconds): on a shared machine the CPU time is the one that
    says what the work costs; with one thread it is about what an idle core would take."""
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def line(name: str, t: tuple[float, float], base: tuple[float, float]) -> str:
    return (f"{name:<48} {t[0]:7.2f} s wall = {t[0] / base[0]:5.1f} forwards;  {t[1]:7.2f} s CPU = "
            f"{t[1] / base[1]:5.1f} forwards")


def plain_forward(model, ids):
    with torch.inference_mode():
        model(torch.tensor([ids]), use_cache=False)


def matmul_rate(repeats: int = 5) -> float:
    """This machine's float32 matmul rate in FLOP/s, at the shape of one batched MLP product of IG."""
    a, b = torch.randn(3200, 768), torch.randn(768, 3072)
    a @ b  # warm-up
    t = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / t


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ig_flops(config, tokens: int, steps: int) -> float:
    """Matmul FLOPs of integrated gradients: a forward and an input-gradient backward (as costly as the
    forward: the weights are frozen) per step, plus three forwards (the greedy target and both ends).
    The head runs at the last position only and the 100-token attention scores are negligible."""
    d, f = config.hidden_size, config.ffn_dim
    per_token = 2 * config.num_hidden_layers * (4 * d * d + 2 * d * f)
    return (2 * steps + 3) * per_token * tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = build()
    model = loaded.model
    g = torch.Generator().manual_seed(1)
    context = [2] + torch.randint(3, 50000, (99,), generator=g).tolist()
    clean = [2] + torch.randint(3, 50000, (19,), generator=g).tolist()
    corrupt = list(clean)
    corrupt[3:6] = torch.randint(3, 50000, (3,), generator=g).tolist()
    print(f"opt-125m (random weights), float32, CPU, {torch.get_num_threads()} threads, median of {args.repeats}")

    plain_forward(model, context)  # warm-up
    attribute(loaded, context[:10], method="ig", steps=4)
    f100 = median_time(lambda: plain_forward(model, context), args.repeats)
    print(line("one plain forward, 100 tokens", f100, f100))
    ig = median_time(lambda: attribute(loaded, context, method="ig", steps=32), args.repeats)
    print(line("integrated gradients, 32 steps, 100 tokens", ig, f100))
    rate, flops = matmul_rate(), ig_flops(model.config, len(context), 32)
    print(f"  its arithmetic: {flops / 1e12:.2f} TFLOP; at this machine's best float32 matmul rate "
          f"({rate / 1e9:.0f} GFLOP/s) no implementation takes under {flops / rate:.1f} s")

    f20 = median_time(lambda: plain_forward(model, clean), args.repeats)
    print(line("one plain forward, 20 tokens", f20, f20))
    target = 5
    rows = median_time(lambda: patch(loaded, clean, corrupt, target, heads=False), args.repeats)
    print(line("residual patching map, 13 rows x 20 positions", rows, f20))
    full = median_time(lambda: patch(loaded, clean, corrupt, target), args.repeats)
    print(line("  and the 12 x 12 head map as well", full, f20))

if __name__ == "__main__":
    main()
