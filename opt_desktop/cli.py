"""opt-desktop-cli: the engine without a window, for scripts and quick checks."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import queue
import signal
import sys
import threading
from pathlib import Path
from typing import get_args

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
from .engine.messages.interventions_spec import parse_head_mask, parse_positions
from .engine.messages.settings import DEFAULT_SOURCE, Device, DType
from .engine.running.text import one_token, prompt_ids, token_piece
from .engine.messages.errors import JobCancelled
from .session.file import check_save_path
from .formatting import format_bytes
from .session import EXPORT_FORMATS, RunTrace, Session, SessionFileError, load_session, save_session, write_export
from .session.describe import (
    analyses_lines,
    changed_settings,
    counted,
    finish_text,
    fork_text,
    head_mask_text,
    model_line,
    run_name,
    settings_text,
    shorten,
)
from .engine.jobs.job import JobProgress
from .engine.messages.errors import describe_error
from .engine.messages.requests import AttributionRequest, PatchingRequest, RoutesRequest
from .logs import setup_logging
from .session.export import export_text

log = logging.getLogger("opt_desktop.cli")  # not __name__: it is "__main__" under python -m


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
    _intervention_args(p)


def _intervention_args(p: argparse.ArgumentParser) -> None:
    v = p.add_argument_group("interventions")
    v.add_argument("--mask-heads", metavar="SPEC",
                   help='heads to ablate or scale, LAYER:HEAD counted from 0 as in decoder.layers[i] and '
                        'the app\'s grid (3:0 is head L3H0): "3:0,3:5,7:*", "3:0=0.5" (scaled), or a JSON file')
    v.add_argument("--hide-positions", metavar="SPEC", help='prompt positions hidden from attention, e.g. "1,2,5-7"')


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_SOURCE,
                   help=f"Hub id, local folder, or 'demo' (built in: a tiny model trained on Python's documentation, "
                        f"not OPT weights); default {DEFAULT_SOURCE}")
    p.add_argument("--dtype", default="float32", choices=get_args(DType))
    p.add_argument("--device", default="auto", choices=get_args(Device))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opt-desktop-cli", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log what happens to stderr too (-vv: debug); the log file always has the details")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="stream a completion to stdout")
    _model_args(gen)
    src = gen.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the prompt text")
    src.add_argument("--prompt-file", type=Path, help="read the prompt from a file ('-' for stdin)")
    gen.add_argument("--json", action="store_true", help="print the events as JSON lines instead of text")
    gen.add_argument("--save", metavar="FILE", type=Path,
                     help="save the run as a session file (.optsession), with the logit lens of every position")
    gen.add_argument("--no-lens", action="store_true", help="with --save: do not compute the logit lens first")
    _settings_args(gen)
    attr = sub.add_parser("attribute", help="score each prompt token's part in predicting the next token")
    _model_args(attr)
    attr.add_argument("--prompt", required=True, help="the prompt text (the leading </s> is added)")
    attr.add_argument("--target", metavar="TEXT",
                      help="the predicted token, exactly one token appended to the prompt (default: the greedy one)")
    attr.add_argument("--alternative", metavar="TEXT",
                      help="attribute logit(target) - logit(alternative) instead of log p(target)")
    attr.add_argument("--method", choices=("ixg", "ig"), default="ig",
                      help="ixg: input x gradient; ig: integrated gradients from a zero embedding (default)")
    attr.add_argument("--steps", type=int, default=32, help="integrated-gradient steps, Gauss-Legendre (default 32)")
    attr.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    _intervention_args(attr)
    patch = sub.add_parser("patch", help="activation patching from a clean prompt into a corrupted one")
    _model_args(patch)
    patch.add_argument("--clean", required=True, metavar="TEXT", help="the clean prompt")
    patch.add_argument("--corrupt", required=True, metavar="TEXT", help="the corrupted prompt, of the same token length")
    patch.add_argument("--target", required=True, metavar="TEXT", help="the predicted token, exactly one token")
    patch.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    _intervention_args(patch)
    rts = sub.add_parser("routes", help="information-flow routes of every token (Ferrando & Voita 2024)")
    _model_args(rts)
    rts.add_argument("--prompt", required=True, help="the text (the leading </s> is added)")
    rts.add_argument("--json", action="store_true", help="print one JSON object with every contribution")
    rts.add_argument("--threshold", type=float, default=0.04, help="hide edges under it (default 0.04)")
    _intervention_args(rts)
    info = sub.add_parser("info", help="print the model's architecture")
    _model_args(info)
    show = sub.add_parser("show", help="summarise the runs of a session file")
    show.add_argument("file", type=Path, metavar="FILE")
    export = sub.add_parser("export", help="write a session file as Markdown, CSV, JSON or an HTML report")
    export.add_argument("file", type=Path, metavar="FILE")
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    export.add_argument("-o", "--output", type=Path, metavar="OUT", help="write here instead of to stdout")
    export.add_argument("--run", type=int, metavar="N", help="only run N, numbered as `show` lists them (1 = first)")
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
        ("memory", format_bytes(info.memory_bytes)),
    ]
    for key, value in rows:
        print(f"{key:>20}: {value}")
    return 0


def _lens(engine: EngineService, trace: RunTrace) -> None:
    """Compute the logit lens of every position and keep it with the run (Ctrl+C skips it)."""
    from .engine.analyses.lens_table import lens_table

    stop = threading.Event()

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r\x1b[Klogit lens {done / total:.0%}", end="", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, lambda *a: stop.set())
    try:
        request = trace.lens_request()
        table = engine.call(lambda loaded: lens_table(loaded, progress=progress, stop=stop, **request)).result()
        trace.set_lens_table(table)
    except JobCancelled:
        print("note: the logit lens was not computed (stopped); the run is saved without it", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, previous)
        if sys.stderr.isatty():
            print("\r\x1b[K", end="", file=sys.stderr)


def cmd_generate(engine: EngineService, args) -> int:
    if args.save is not None:
        check_save_path(args.save)  # before generating: a run is not lost to a path that cannot be written
    settings = settings_from_args(args)
    inspect = InspectSettings(hidden_stats=not args.no_stats, attention_stats=not args.no_stats,
                              keep_residuals=not args.no_stats, keep_attention_rows=args.keep_attention_rows)
    prompt = _read_prompt(args)
    hidden = parse_positions(args.hide_positions) if args.hide_positions else ()
    info = _load(engine, args)
    # After loading: "7:*" needs the model's number of heads.
    mask = parse_head_mask(args.mask_heads, info.n_layers, info.n_heads) if args.mask_heads else ()
    request = GenerationRequest(prompt=prompt, settings=settings, inspect=inspect, head_mask=mask,
                                hidden_positions=hidden)
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    recorded: list = []
    future = engine.generate(request, events.put, stop)
    future.add_done_callback(lambda f: events.put(None))

    # Ctrl+C asks the worker to stop; the partial result is still printed.
    previous = signal.signal(signal.SIGINT, lambda *a: stop.set())
    printed = 0
    try:
        while (event := events.get()) is not None:
            recorded.append(event)
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
    finished = next((e for e in reversed(recorded) if isinstance(e, Finished)), None)
    if finished is None:
        future.result()  # the run never started: this raises why
    rate = f"{finished.tokens_per_s:.1f} tokens/s" if finished.tokens_per_s else "– tokens/s"
    ttft = f"{finished.time_to_first_token_s * 1000:.0f} ms" if finished.time_to_first_token_s is not None else "–"
    print(f"{counted(finished.n_tokens, 'token')}, {rate}, first token after {ttft}, finished: {finished.reason}",
          file=sys.stderr)
    if args.save is not None:  # a run that broke is saved too: what it made, marked "error"
        trace = RunTrace(recorded[0])
        for event in recorded[1:]:
            trace.apply(event)
        if not args.no_lens:
            _lens(engine, trace)
        save_session(Session([trace]), args.save)
        print(f"saved to {args.save}", file=sys.stderr)
    if finished.reason == "error":
        future.exception()  # logged by the engine; the person gets its line
        print(f"error: {finished.message}", file=sys.stderr)
        return 1
    return 0


def _interventions(args, info) -> tuple[tuple, tuple]:
    hidden = parse_positions(args.hide_positions) if args.hide_positions else ()
    mask = parse_head_mask(args.mask_heads, info.n_layers, info.n_heads) if args.mask_heads else ()
    return mask, hidden


def _run_job(engine: EngineService, request):
    """Run an analysis job, showing its progress on a terminal; Ctrl+C stops it between chunks."""

    def progress(event):
        if isinstance(event, JobProgress) and sys.stderr.isatty():
            print(f"\r\x1b[K{event.done}/{event.total}", end="", file=sys.stderr, flush=True)

    job = engine.submit(request, on_event=progress)
    previous = signal.signal(signal.SIGINT, lambda *a: job.stop())
    try:
        return job.future.result()
    finally:
        signal.signal(signal.SIGINT, previous)
        if sys.stderr.isatty():
            print("\r\x1b[K", end="", file=sys.stderr)


def _bar(value: float, scale: float, width: int = 20) -> str:
    if not math.isfinite(value) or scale <= 0:
        return ""
    return ("+" if value >= 0 else "-") * max(0, round(abs(value) / scale * width))


def cmd_attribute(engine: EngineService, args) -> int:
    info = _load(engine, args)
    tok = engine.tokenizer
    ids = prompt_ids(tok, args.prompt, info.bos_token_id)
    target = None if args.target is None else one_token(tok, args.target, "target")
    alternative = None if args.alternative is None else one_token(tok, args.alternative, "alternative")
    mask, hidden = _interventions(args, info)
    result = _run_job(engine, AttributionRequest(tuple(ids), target, args.method, args.steps, alternative,
                                                 tuple(mask), tuple(hidden)))
    if result.note:
        print(f"note: {result.note}", file=sys.stderr)
    tokens = [token_piece(tok, int(i)) for i in result.token_ids]
    target_text = token_piece(tok, result.target_id)
    if args.json:
        print(json.dumps(_jsonable({
            "tokens": tokens, "token_ids": result.token_ids, "scores": result.scores, "target": target_text,
            "target_id": result.target_id, "logprob": result.logprob, "method": result.method, "steps": result.steps,
        }), ensure_ascii=False))
        return 0
    how = "input x gradient" if result.method == "ixg" else f"integrated gradients, {result.steps} steps"
    what = "log p(target)" if result.alternative_id is None else \
        f"logit(target) - logit({token_piece(tok, result.alternative_id)!r})"
    print(f"target {target_text!r} (id {result.target_id}), log p = {result.logprob:.4f}; {how} of {what}")
    if result.method == "ig":
        print(f"scores sum to {float(result.scores.sum()):.4f}; f(input) - f(baseline) = "
              f"{result.value - result.baseline_value:.4f}")
    scale = float(np.nanmax(np.abs(result.scores))) if len(result.scores) else 0.0
    width = max(5, *(len(repr(t)) for t in tokens))
    print(f"{'pos':>5}  {'token':<{width}}  {'score':>10}")
    for i, (t, s) in enumerate(zip(tokens, result.scores)):
        print(f"{i:>5}  {t!r:<{width}}  {float(s):>10.4f}  {_bar(float(s), scale)}")
    return 0


def _table(values: np.ndarray, row_labels, col_labels, digits: int = 2) -> list[str]:
    w = digits + 4
    head = f"{'':>6} " + " ".join(f"{c:>{w}}" for c in col_labels)
    lines = [head]
    for label, row in zip(row_labels, values):
        lines.append(f"{label:>6} " + " ".join(f"{'-':>{w}}" if not math.isfinite(v) else
                                               f"{round(v, digits) + 0.0:>{w}.{digits}f}" for v in row))
    return lines


def cmd_patch(engine: EngineService, args) -> int:
    info = _load(engine, args)
    tok = engine.tokenizer
    clean = prompt_ids(tok, args.clean, info.bos_token_id)
    corrupt = prompt_ids(tok, args.corrupt, info.bos_token_id)
    target = one_token(tok, args.target, "target")
    mask, hidden = _interventions(args, info)
    result = _run_job(engine, PatchingRequest(tuple(clean), tuple(corrupt), target, True, tuple(mask), tuple(hidden)))
    tokens = [token_piece(tok, int(i)) for i in result.clean_ids]
    if args.json:
        print(json.dumps(_jsonable({
            "rows": list(result.row_labels), "tokens": tokens, "clean_prob": result.clean_prob,
            "corrupt_prob": result.corrupt_prob, "prob": result.prob, "heads": result.head_prob,
        }), ensure_ascii=False))
        return 0
    print(f"target {token_piece(tok, target)!r} (id {target}): p = {result.clean_prob:.4g} clean, "
          f"{result.corrupt_prob:.4g} corrupted")
    print("tokens: " + "  ".join(f"{i}:{t!r}" for i, t in enumerate(tokens)))
    if result.too_close:
        print(result.too_close)
    print(f"\nresidual rows x positions, {result.shown_what}:")
    digits = 2 if result.normalisable else 4  # a change in p, not a share of the difference: smaller numbers
    print("\n".join(_table(result.shown(result.prob), result.row_labels, range(len(tokens)), digits)))
    print(f"\nlayers x heads, each head's output at all positions, {result.shown_what}:")
    print("\n".join(_table(result.shown(result.head_prob), range(info.n_layers), range(info.n_heads), digits)))
    return 0


def cmd_routes(engine: EngineService, args) -> int:
    from .session.routes_text import strongest_table, write_routes_json

    info = _load(engine, args)
    ids = prompt_ids(engine.tokenizer, args.prompt, info.bos_token_id)
    mask, hidden = _interventions(args, info)
    result = _run_job(engine, RoutesRequest(tuple(ids), tuple(hidden), ((0, tuple(mask)),), dense=args.json))
    if args.json:
        write_routes_json(result, sys.stdout)
    else:
        print("\n".join(strongest_table(result, [token_piece(engine.tokenizer, i) for i in ids], threshold=args.threshold)))
    return 0


def cmd_show(args) -> int:
    session = load_session(args.file)
    n = len(session.runs)
    print(f"{args.file}: {counted(n, 'run')}")
    for i, trace in enumerate(session.runs):
        s = trace.started
        rows = [
            ("model", model_line(s.model)),
            ("prompt", f"{shorten(s.prompt)!r}" if s.prompt else "(token ids only)"),
            ("prompt tokens", str(trace.n_prompt)),
            ("settings", settings_text(changed_settings(trace))),
            ("seed", str(s.seed)),
            ("output", shorten(trace.text)),
            ("result", finish_text(trace.finished)),
        ]
        if s.head_mask:
            rows.append(("head mask", head_mask_text(s.head_mask, s.model)))
        rows += [(f"head mask from token {c.index}", head_mask_text(c.head_mask, s.model) or "none")
                 for c in trace.mask_changes]
        if s.hidden_positions:
            rows.append(("hidden positions", ", ".join(map(str, s.hidden_positions))))
        if (fork := fork_text(trace)) is not None:
            rows.append(("fork", fork))
        rows += [("note", notice) for notice in trace.notices]
        rows += analyses_lines(trace)
        print(f"\n{run_name(i, trace)}")
        width = max(len(key) for key, _ in rows)
        for key, value in rows:
            print(f"  {key + ':':<{width + 1}} {value}")
    return 0


def cmd_export(args) -> int:
    session = load_session(args.file)
    run = None if args.run is None else args.run - 1
    if args.output is not None:
        write_export(session, args.format, args.output, run)
    else:
        sys.stdout.write(export_text(session, args.format, run))
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = build_parser().parse_args(argv)
    log_path = setup_logging(args.verbose)
    try:
        if args.command in ("show", "export"):  # files only: no engine needed
            return {"show": cmd_show, "export": cmd_export}[args.command](args)
        engine = EngineService()
        try:
            commands = {"info": cmd_info, "generate": cmd_generate, "attribute": cmd_attribute, "patch": cmd_patch,
                        "routes": cmd_routes}
            return commands[args.command](engine, args)
        finally:
            engine.shutdown(wait=True)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line for the person, the traceback in the log
        message, details = describe_error(exc, f"The {args.command} command")
        if isinstance(exc, SessionFileError):
            message = str(exc)
        expected = isinstance(exc, (EngineError, SessionFileError))
        log.log(logging.WARNING if expected else logging.ERROR, "%s\n%s", message, details)
        print(f"error: {message}", file=sys.stderr)
        if not expected and log_path is not None:
            print(f"(the traceback is in {log_path})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
