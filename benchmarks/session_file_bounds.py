"""Memory and time to open damaged and forged session files: the worst case over seeded mutants and
over issue 12's hand-made files, against opening the good file they were made from.

The good file is a real run of the built-in demo model (random weights, no download) with the lens
of every position and head importance kept. Peak memory is measured twice: tracemalloc (Python's and
numpy's allocations, as the fuzz test does) and the rise of anonymous resident memory (everything,
zlib's buffers included). Target (issue 12): no file peaks above 64 MB plus what its real content needs.

    python benchmarks/session_file_bounds.py [--mutants 600] [--padding-mb 800]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests" / "session")]

from peak_memory import PeakRSS  # noqa: E402

MB = 1 << 20


def good_session(path: Path) -> int:
    """Save a demo run with its analyses to `path`; the bytes its arrays take in memory."""
    from opt_desktop.engine import EngineService, GenerationRequest, GenerationSettings, LoadRequest
    from opt_desktop.engine.analyses.lens_table import lens_table
    from opt_desktop.session import RunTrace, Session, save_session

    engine = EngineService()
    try:
        engine.load(LoadRequest(source="demo", device="cpu")).result()
        events: list = []
        engine.generate(GenerationRequest(prompt="The files of a session must never hurt the app, " * 4,
                                          settings=GenerationSettings(max_new_tokens=48)), events.append).result()
        trace = RunTrace(events[0])
        for e in events[1:]:
            trace.apply(e)
        request = trace.lens_request()
        trace.set_lens_table(engine.call(lambda loaded: lens_table(loaded, **request)).result())
        trace.add_head_importance(engine.head_importance(trace.token_ids, trace.n_prompt).result())
    finally:
        engine.shutdown()
    save_session(Session([trace, trace]), path)
    return sum(a.nbytes for a in trace.arrays().values()) * 2


def _open(path: Path) -> str:
    from opt_desktop.session import SessionFileError, load_session

    try:
        return f"opens ({len(load_session(path).runs)} runs)"
    except SessionFileError as exc:
        return "refused: " + exc.reason[:70]


def measure(path: Path) -> tuple[str, float, int, int]:
    """(outcome, seconds, tracemalloc peak, anonymous-memory peak) of opening `path` with the loader
    (what the window and `opt-desktop-cli show` call). Time is taken on its own pass, without the
    probes, which slow Python down."""
    t0 = time.perf_counter()
    outcome = _open(path)
    elapsed = time.perf_counter() - t0
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    _open(path)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    with PeakRSS(trim=True) as rss:
        _open(path)
    return outcome, elapsed, peak, rss.peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=300)
    parser.add_argument("--padding-mb", type=int, default=800)
    args = parser.parse_args()
    import mutants

    folder = Path(tempfile.mkdtemp(prefix="session-bounds-"))
    good = folder / "good.optsession"
    content = good_session(good)
    data = good.read_bytes()
    outcome, t_good, tm_good, rss_good = measure(good)
    print(f"good file: {len(data) / 1024:,.0f} KB, arrays {content / MB:.1f} MiB in memory; opening it: "
          f"{t_good:.3f} s, tracemalloc peak {tm_good / MB:.1f} MiB, anonymous memory +{rss_good / MB:.1f} MiB")

    rows = []
    hand_made = dict(mutants.HAND_MADE)
    hand_made["800 MB of JSON padding"] = lambda d: mutants.json_padding(d, args.padding_mb << 20)
    # Under the 256 MB cap, so the reader must catch it while it streams.
    hand_made["200 MB of JSON padding"] = lambda d: mutants.json_padding(d, 200 << 20)
    # The same 800 MB, its declared size forged down to 100 kB: a declared size can lie.
    hand_made["800 MB of padding declared as 100 kB"] = lambda d: mutants.declare_size(
        mutants.json_padding(d, args.padding_mb << 20), "session.json", 100_000)
    for name, make in hand_made.items():
        path = folder / "hand.optsession"
        path.write_bytes(make(data))
        size = path.stat().st_size
        outcome, elapsed, tm, rss = measure(path)
        rows.append((name, size, elapsed, tm, rss, outcome))
        path.unlink()

    worst = [0.0, 0, 0, ""]
    counts: dict[str, int] = {}
    t_all = time.perf_counter()
    for seed in range(args.mutants):
        kind, blob = mutants.mutant(seed, data)
        path = folder / "mutant.optsession"
        path.write_bytes(blob)
        outcome, elapsed, tm, rss = measure(path)
        key = f"{kind} {'opened' if outcome.startswith('opens') else 'refused'}"
        counts[key] = counts.get(key, 0) + 1
        if tm > worst[1]:
            worst[3] = f"seed {seed} ({kind}): {outcome}"
        worst = [max(worst[0], elapsed), max(worst[1], tm), max(worst[2], rss), worst[3]]
    t_all = time.perf_counter() - t_all

    print("\n| file | size | time | tracemalloc peak | anonymous memory | result |\n| --- | --- | --- | --- | --- | --- |")
    for name, size, elapsed, tm, rss, outcome in rows:
        print(f"| {name} | {size / 1024:,.0f} KB | {elapsed:.3f} s | {tm / MB:.1f} MiB | +{rss / MB:.1f} MiB | {outcome} |")
    print(f"| worst of {args.mutants} mutants | – | {worst[0]:.3f} s | {worst[1] / MB:.1f} MiB | +{worst[2] / MB:.1f} MiB | "
          f"{', '.join(f'{k}: {n}' for k, n in sorted(counts.items()))} |")
    print(f"\nlargest tracemalloc peak among mutants: {worst[3]}; all mutants in {t_all:.1f} s")
    over = [r for r in rows if r[3] > 64 * MB] + ([1] if worst[1] > 64 * MB + tm_good else [])
    print("bound (64 MB + the good file's own peak):", "held" if not over else "EXCEEDED")
    return 0 if not over else 1


if __name__ == "__main__":
    sys.exit(main())
