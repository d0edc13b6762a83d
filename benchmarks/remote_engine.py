"""The engine on a server: bytes on the wire per token, decode speed over a slow link, Stop over it.

1. Wire bytes. What an engine across a network sends (`rows_on_demand`: per-token statistics,
   alternatives and text; no residual or attention rows), measured as the exact frames it writes,
   per generated token and per prompt token, for opt-125m, opt-350m and an opt-66b-shaped model:
   72 heads (the frames hold L x H attention statistics and L+1 hidden-state statistics, never
   anything as wide as the hidden size), with 2 and 4 layers measured and the bytes per layer
   scaled to 64 by arithmetic (checked against a 6-layer model). Beside them, what the residual
   rows alone would have been.
2. The slow link. opt-125m (random weights) in an engine reached through a real OpenSSH server on
   127.0.0.1 (tests/ssh_server.py) behind a relay limited to 10 Mbit/s and 50 ms round trip
   (slow_link.py), against the same engine over a local pipe (the child process the window starts):
   decode tokens/s as the tokens arrive at this side. Rounds interleaved, median. Target >= 0.9.
3. Stop over the slow link: pressed at a random moment of a decode, and of a 512-token prompt's
   prefill and statistics; latency from the press to the job's end here, against the same presses
   on the local pipe (interleaved, so both see the machine's load). Target: 0.5 s + 1 round trip.

    python benchmarks/remote_engine.py [--rounds 3] [--new-tokens 64] [--trials 10]

Needs OpenSSH's server (apt-get install openssh-server), run as the user the test server lets in.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from bench_models import opt_config, save_random_model, tokenizer  # noqa: E402
from slow_link import SlowLink  # noqa: E402
from opt_desktop.engine import EngineService, GenerationRequest, GenerationSettings, InspectSettings, LoadRequest  # noqa: E402
from opt_desktop.engine.messages.events import PromptScored, Started, TokenGenerated  # noqa: E402
from opt_desktop.engine.process import protocol  # noqa: E402
from opt_desktop.engine.process.engine_process import EngineProcess  # noqa: E402
from opt_desktop.engine.process.process_messages import JobEvent  # noqa: E402
from opt_desktop.engine.process.ssh import SshEngine  # noqa: E402
from opt_desktop.formatting import format_bytes  # noqa: E402
from ssh_server import SshServer, engine_command, sshd_missing  # noqa: E402

OPT_66B = dict(n_layers=64, n_heads=72, hidden=9216)


def prompt_ids(n: int, seed: int = 0) -> tuple[int, ...]:
    rng = random.Random(seed)
    return (2,) + tuple(rng.randrange(4, 50000) for _ in range(n - 1))


def frame_bytes(event) -> int:
    return sum(len(memoryview(p).cast("B")) for p in protocol.encode(JobEvent(1, event)))


# --- 1. bytes on the wire ---------------------------------------------------------------------

def wire_bytes(engine, n_prompt: int, n_new: int) -> tuple[float, int]:
    """(mean frame bytes per generated token after the first, frame bytes of the prompt's events)."""
    events = []
    inspect = InspectSettings(rows_on_demand=True)
    engine.generate(GenerationRequest(prompt_ids=prompt_ids(n_prompt), inspect=inspect,
                                      settings=GenerationSettings(max_new_tokens=n_new)), events.append).result()
    decode = [frame_bytes(e) for e in events if isinstance(e, TokenGenerated) and e.index > 0]
    prompt = sum(frame_bytes(e) for e in events if isinstance(e, (Started, PromptScored)))
    return statistics.mean(decode), prompt


def measure_model(folder: Path, n_new: int) -> tuple[float, float]:
    """(bytes per generated token, bytes per prompt token) of the checkpoint in `folder`."""
    engine = EngineService()
    try:
        engine.load(LoadRequest(source=str(folder), device="cpu")).result()
        per_token, short = wire_bytes(engine, 32, n_new)
        _, long = wire_bytes(engine, 160, 2)
        return per_token, (long - short) / (160 - 32)
    finally:
        engine.shutdown()


def shaped_like_66b(folder: Path, n_layers: int) -> Path:
    """opt-66b's 72 heads with `n_layers` layers and a narrow width (the frames do not depend on it)."""
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(vocab_size=50272, hidden_size=72 * 8, num_hidden_layers=n_layers, num_attention_heads=72,
                       ffn_dim=4 * 72 * 8, word_embed_proj_dim=72 * 8, max_position_embeddings=2048,
                       do_layer_norm_before=True, pad_token_id=1, bos_token_id=2, eos_token_id=2)
    folder.mkdir(parents=True, exist_ok=True)
    OPTForCausalLM(config).save_pretrained(folder)
    tokenizer().save_pretrained(folder)
    return folder


def report_wire(tmp: Path, n_new: int) -> None:
    print("\n1. Bytes on the wire (exact frames; no residual or attention rows cross)")
    print(f"{'model':<26} {'per generated token':>20} {'per prompt token':>17} {'residual rows kept there, per token':>36}")
    for name in ("opt-125m", "opt-350m"):
        cfg = opt_config(name)
        per_token, per_prompt = measure_model(save_random_model(name, tmp / name), n_new)
        width = 4 if cfg.hidden_size <= 1024 else 2  # float32 up to opt-350m, float16 beyond (capture.residual_dtype)
        rows = (cfg.num_hidden_layers + 1) * cfg.hidden_size * width
        print(f"{name:<26} {format_bytes(per_token):>20} {format_bytes(per_prompt):>17} {format_bytes(rows):>36}")
    measured = {L: measure_model(shaped_like_66b(tmp / f"66b-{L}", L), n_new) for L in (2, 4, 6)}
    per_layer = [(measured[4][i] - measured[2][i]) / 2 for i in (0, 1)]
    fixed = [measured[2][i] - 2 * per_layer[i] for i in (0, 1)]
    predicted6 = [fixed[i] + 6 * per_layer[i] for i in (0, 1)]
    err = max(abs(predicted6[i] / measured[6][i] - 1) for i in (0, 1))
    big = [fixed[i] + OPT_66B["n_layers"] * per_layer[i] for i in (0, 1)]
    rows = (OPT_66B["n_layers"] + 1) * OPT_66B["hidden"] * 2
    print(f"{'opt-66b (scaled from 2, 4)':<26} {format_bytes(big[0]):>20} {format_bytes(big[1]):>17} {format_bytes(rows):>36}")
    print(f"   per layer: {per_layer[0]:.0f} B per generated token, {per_layer[1]:.0f} B per prompt token "
          f"(the 6-layer model is within {err:.1%} of the line through 2 and 4)")
    rate = 10e6 / 8
    print(f"   opt-66b, a 2,000-token prompt: {format_bytes(2000 * big[1])} of statistics "
          f"({2000 * big[1] / rate:.1f} s at 10 Mbit/s) instead of {format_bytes(2000 * rows)} of float16 residual rows "
          f"({format_bytes(2000 * rows * 2)} in float32); decoding needs {big[0] * 8 / 1e6:.2f} Mbit/s per token/s")


# --- 2. and 3. the slow link --------------------------------------------------------------------

def arrivals(engine, request) -> tuple[list[float], object]:
    """When each generated token arrived here (perf_counter), and the Finished event."""
    times, events = [], []

    def on_event(event):
        if isinstance(event, TokenGenerated):
            times.append(time.perf_counter())
        events.append(event)

    finished = engine.generate(request, on_event).result()
    return times, finished


def decode_rate(engine, request) -> float:
    times, _ = arrivals(engine, request)
    return (len(times) - 1) / (times[-1] - times[0])


def stop_latency(engine, request, delay_range, rng) -> float:
    job = engine.submit(request)
    while job.state == "queued":
        time.sleep(0.001)
    time.sleep(rng.uniform(*delay_range))
    t0 = time.perf_counter()
    job.stop()
    job.wait(60)
    return time.perf_counter() - t0


def report_slow_link(tmp: Path, rounds: int, n_new: int, trials: int, mbit: float, rtt_ms: float) -> None:
    missing = sshd_missing()
    if missing:
        print(f"\n2-3. skipped: {missing}")
        return
    folder = save_random_model("opt-125m", tmp / "opt-125m-link")
    load = LoadRequest(source=str(folder), device="cpu")
    env = {"OPT_DESKTOP_HOME": str(tmp / "server-home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    with SshServer(tmp / "sshd", env=env) as server, SlowLink(server.port, mbit, rtt_ms) as link:
        key = (server.folder / "host_key.pub").read_text().split()
        with open(server.known_hosts, "a") as f:  # the relay's port is the same server
            f.write(f"[127.0.0.1]:{link.port} {key[0]} {key[1]}\n")
        piped = EngineProcess()
        remote = SshEngine(server.host(command=engine_command(), port=link.port))
        try:
            for engine in (piped, remote):
                engine.load(load).result(600)
            request = GenerationRequest(prompt_ids=prompt_ids(32), settings=GenerationSettings(max_new_tokens=n_new))
            decode_rate(remote, request), decode_rate(piped, request)  # warm both
            rates = {"pipe": [], "ssh": []}
            for _ in range(rounds):
                rates["pipe"].append(decode_rate(piped, request))
                before = link.received
                rates["ssh"].append(decode_rate(remote, request))
                on_wire = (link.received - before) / n_new
            pipe, ssh = statistics.median(rates["pipe"]), statistics.median(rates["ssh"])
            print(f"\n2. opt-125m decode over {mbit:g} Mbit/s, {rtt_ms:g} ms round trip (through ssh), median of {rounds}:")
            print(f"   local pipe {pipe:.1f} tokens/s, ssh over the slow link {ssh:.1f} tokens/s: ratio {ssh / pipe:.2f} "
                  f"(target >= 0.9); {format_bytes(on_wire)} per token on the link, ssh's framing included, so the link "
                  f"carries up to {link.rate / on_wire:.0f} tokens/s of this stream (a stream does not wait for round trips)")
            budget = 0.5 + rtt_ms / 1000
            decode = GenerationRequest(prompt_ids=prompt_ids(32), settings=GenerationSettings(max_new_tokens=400))
            cases = (("during a decode", lambda t: decode, (1.0, 3.0)),
                     ("during a 512-token prompt", lambda t: GenerationRequest(
                         prompt_ids=prompt_ids(512, t), settings=GenerationSettings(max_new_tokens=4)), (0.05, 1.5)))
            print(f"\n3. Stop, {trials} trials each, the same moments for both (target over ssh: {budget:.2f} s = "
                  "0.5 s + 1 round trip); latency from the press to the job's end here:")
            for what, request_for, delays in cases:
                latency = {"pipe": [], "ssh": []}
                for t in range(trials):
                    for name, engine in (("pipe", piped), ("ssh", remote)):  # interleaved: both see the same load
                        latency[name].append(stop_latency(engine, request_for(t), delays, random.Random(t)))
                pipe, ssh = sorted(latency["pipe"]), sorted(latency["ssh"])
                print(f"   {what}: local pipe p50 {pipe[len(pipe) // 2]:.3f} s, max {pipe[-1]:.3f} s; "
                      f"ssh p50 {ssh[len(ssh) // 2]:.3f} s, max {ssh[-1]:.3f} s "
                      f"({'met' if ssh[-1] <= budget else 'missed'}; p50 over ssh minus the pipe's: "
                      f"{ssh[len(ssh) // 2] - pipe[len(pipe) // 2]:+.3f} s)")
        finally:
            for engine in (piped, remote):
                engine.shutdown()
                engine.join(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--mbit", type=float, default=10.0)
    parser.add_argument("--rtt-ms", type=float, default=50.0)
    parser.add_argument("--skip-wire", action="store_true")
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # save_pretrained's shard bars
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_wire:
            report_wire(Path(tmp), args.new_tokens)
        report_slow_link(Path(tmp), args.rounds, args.new_tokens, args.trials, args.mbit, args.rtt_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
