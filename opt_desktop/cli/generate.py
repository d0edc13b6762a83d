"""`generate`: stream a completion to stdout, the summary to stderr; optionally save it as a session."""

from __future__ import annotations

import queue
import signal
import sys
import threading

from ..engine import EngineError, Finished, GenerationRequest, InspectSettings, Notice, TokenGenerated
from ..engine.jobs.engine import Engine
from ..engine.messages.errors import JobCancelled
from ..engine.messages.interventions_spec import parse_head_mask, parse_positions
from ..engine.messages.requests import LensTableRequest
from ..session import RunTrace, Session, save_session
from ..session.describe import counted
from ..session.file import check_save_path
from .jobs import load, run_job
from .parser import settings_from_args
from .terminal import event_to_json, note


def _read_prompt(args) -> str:
    if args.prompt is not None:
        return args.prompt
    if str(args.prompt_file) == "-":
        return sys.stdin.read()
    try:
        return args.prompt_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise EngineError(f"Cannot read the prompt file {args.prompt_file}: {exc.strerror or exc}") from None


def _lens(engine: Engine, trace: RunTrace) -> None:
    """Compute the logit lens of every position and keep it with the run (Ctrl+C skips it)."""
    try:
        trace.set_lens_table(run_job(engine, LensTableRequest(**trace.lens_request()), "logit lens"))
    except JobCancelled:
        note("note: the logit lens was not computed (stopped); the run is saved without it")


def cmd_generate(engine: Engine, args) -> int:
    if args.save is not None:
        check_save_path(args.save)  # before generating: a run is not lost to a path that cannot be written
    settings = settings_from_args(args)
    inspect = InspectSettings(hidden_stats=not args.no_stats, attention_stats=not args.no_stats,
                              keep_residuals=not args.no_stats, keep_attention_rows=args.keep_attention_rows)
    prompt = _read_prompt(args)
    hidden = parse_positions(args.hide_positions) if args.hide_positions else ()
    info = load(engine, args)
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
                note(f"note: {event.message}")
            elif isinstance(event, Finished):
                sys.stdout.write(event.text[printed:] + "\n")  # a character held back to the end
                sys.stdout.flush()  # before the summary on stderr: it starts on a line of its own
    finally:
        signal.signal(signal.SIGINT, previous)
    finished = next((e for e in reversed(recorded) if isinstance(e, Finished)), None)
    if finished is None:
        future.result()  # the run never started: this raises why
    rate = f"{finished.tokens_per_s:.1f} tokens/s" if finished.tokens_per_s else "– tokens/s"
    ttft = f"{finished.time_to_first_token_s * 1000:.0f} ms" if finished.time_to_first_token_s is not None else "–"
    note(f"{counted(finished.n_tokens, 'token')}, {rate}, first token after {ttft}, finished: {finished.reason}")
    if args.save is not None:  # a run that broke is saved too: what it made, marked "error"
        trace = RunTrace(recorded[0])
        for event in recorded[1:]:
            trace.apply(event)
        if not args.no_lens:
            _lens(engine, trace)
        save_session(Session([trace]), args.save)
        note(f"saved to {args.save}")
    if finished.reason == "error":
        future.exception()  # logged by the engine; the person gets its line
        note(f"error: {finished.message}")
        return 1
    return 0
