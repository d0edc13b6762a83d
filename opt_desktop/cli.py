"""opt-desktop-cli: the engine without a window, for scripts and quick checks."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import queue
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from .engine import (
    EngineError,
    EngineService,
    Finished,
    GenerationRequest,
    GenerationSettings,
    InspectSettings,
    LoadRequest,
    Notice,
    TokenGenerated,
)
from .engine.settings import DEFAULT_SOURCE


def _settings_args(p: argparse.ArgumentParser) -> None:
    d = GenerationSettings()
    g = p.add_argument_group("generation settings")
    g.add_argument("--config", metavar="JSON", help="start from a generation_config.json (flags below override it)")
    g.add_argument("--max-new-tokens", type=int, help=f"tokens to generate (default {d.max_new_tokens})")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--sample", dest="do_sample", action="store_true", default=None, help="sample (default: greedy)")
    mode.add_argument("--greedy", dest="do_sample", action="store_false", help="always take the most likely token")
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-k", type=int, help="0 turns top-k off")
    g.add_argument("--top-p", type=float)
    g.add_argument("--typical-p", type=float)
    g.add_argument("--min-p", type=float, help="0 turns min-p off")
    g.add_argument("--repetition-penalty", type=float)
    g.add_argument("--no-repeat-ngram-size", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--stop", action="append", default=None, metavar="TEXT",
                   help="stop when this text appears (repeatable; \\n means a newline)")
    i = p.add_argument_group("inspection")
    i.add_argument("--no-stats", action="store_true", help="capture no hidden-state or attention statistics")
    i.add_argument("--keep-attention-rows", action="store_true", help="keep full attention rows (float16)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_SOURCE,
                   help=f"Hub id, local folder, or 'demo' (built-in, random weights); default {DEFAULT_SOURCE}")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opt-desktop-cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="stream a completion to stdout")
    _model_args(gen)
    src = gen.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the prompt text")
    src.add_argument("--prompt-file", type=Path, help="read the prompt from a file ('-' for stdin)")
    gen.add_argument("--json", action="store_true", help="print the events as JSON lines instead of text")
    _settings_args(gen)
    info = sub.add_parser("info", help="print the model's architecture")
    _model_args(info)
    return parser


def settings_from_args(args) -> GenerationSettings:
    base = GenerationSettings.load_json(args.config) if args.config else GenerationSettings()
    changes = {}
    for name in ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "typical_p", "min_p",
                 "repetition_penalty", "no_repeat_ngram_size", "seed"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    if args.stop:
        changes["stop_strings"] = tuple(s.replace("\\n", "\n") for s in args.stop)
    return base.replace(**changes)


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def event_to_json(event) -> str:
    """One event as a JSON line; residual rows and full attention rows are left out (they are large)."""
    data = {"event": type(event).__name__}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if dataclasses.is_dataclass(value):
            value = {k.name: getattr(value, k.name) for k in dataclasses.fields(value)
                     if k.name not in ("residual", "attention_rows")}
        data[f.name] = value
    return json.dumps(_jsonable(data), ensure_ascii=False)


def _read_prompt(args) -> str:
    if args.prompt is not None:
        return args.prompt
    if str(args.prompt_file) == "-":
        return sys.stdin.read()
    try:
        return args.prompt_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise EngineError(f"Cannot read the prompt file {args.prompt_file}: {exc.strerror or exc}") from None


def _load(engine: EngineService, args):
    request = LoadRequest.parse(source=args.model, dtype=args.dtype, device=args.device)

    def progress(p):
        if sys.stderr.isatty():
            pct = f" {p.fraction:.0%}" if p.fraction is not None else ""
            print(f"\r\x1b[K{p.message}{pct}", end="", file=sys.stderr, flush=True)

    info = engine.load(request, progress).result()
    if sys.stderr.isatty():
        print("\r\x1b[K", end="", file=sys.stderr)
    return info


def cmd_info(engine: EngineService, args) -> int:
    info = _load(engine, args)
    rows = [
        ("model", info.label),
        ("layers", info.n_layers),
        ("heads", info.n_heads),
        ("hidden size", info.hidden_size),
        ("word embedding size", info.word_embed_proj_dim),
        ("ffn size", info.ffn_dim),
        ("vocabulary", info.vocab_size),
        ("context", info.context_length),
        ("layer norm", "pre-LN (before attention)" if info.pre_layer_norm else "post-LN (after attention)"),
        ("parameters", f"{info.n_params:,}"),
        ("dtype", info.dtype),
        ("device", info.device),
        ("memory", f"{info.memory_bytes / 2**20:,.1f} MiB"),
    ]
    for key, value in rows:
        print(f"{key:>20}: {value}")
    return 0


def cmd_generate(engine: EngineService, args) -> int:
    settings = settings_from_args(args)
    inspect = InspectSettings(hidden_stats=not args.no_stats, attention_stats=not args.no_stats,
                              keep_residuals=not args.no_stats, keep_attention_rows=args.keep_attention_rows)
    prompt = _read_prompt(args)
    _load(engine, args)
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    future = engine.generate(GenerationRequest(prompt=prompt, settings=settings, inspect=inspect), events.put, stop)
    future.add_done_callback(lambda f: events.put(None))

    # Ctrl+C asks the worker to stop; the partial result is still printed.
    previous = signal.signal(signal.SIGINT, lambda *a: stop.set())
    printed = 0
    try:
        while (event := events.get()) is not None:
            if args.json:
                print(event_to_json(event), flush=True)
            elif isinstance(event, TokenGenerated):
                sys.stdout.write(event.text)
                sys.stdout.flush()
                printed += len(event.text)
            elif isinstance(event, Notice):
                print(f"note: {event.message}", file=sys.stderr)
            elif isinstance(event, Finished):
                sys.stdout.write(event.text[printed:] + "\n")  # a character held back to the end
    finally:
        signal.signal(signal.SIGINT, previous)
    finished = future.result()
    rate = f"{finished.tokens_per_s:.1f} tokens/s" if finished.tokens_per_s else "– tokens/s"
    ttft = f"{finished.time_to_first_token_s * 1000:.0f} ms" if finished.time_to_first_token_s is not None else "–"
    print(f"{finished.n_tokens} tokens, {rate}, first token after {ttft}, finished: {finished.reason}",
          file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = build_parser().parse_args(argv)
    engine = EngineService()
    try:
        return {"info": cmd_info, "generate": cmd_generate}[args.command](engine, args)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.shutdown(wait=True)


if __name__ == "__main__":
    sys.exit(main())
