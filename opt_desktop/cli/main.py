"""The CLI's entry point: parse, run one command, and turn whatever went wrong into one line."""

from __future__ import annotations

import logging
import os
import sys

from ..engine import EngineError, EngineService
from ..engine.jobs.engine import Engine
from ..engine.messages.errors import describe_error
from ..engine.messages.threads import parse_threads
from ..engine.running.threads import ThreadTuner, prepare_environment
from ..formatting import format_bytes
from ..logs import setup_logging
from ..session import SessionFileError
from .analyses import cmd_attribute, cmd_patch, cmd_routes
from .files import cmd_export, cmd_show
from .generate import cmd_generate
from .jobs import load
from .parser import build_parser
from .terminal import quiet_broken_pipe

log = logging.getLogger("opt_desktop.cli")  # not __name__: the log names the CLI, whichever module writes


def cmd_info(engine: Engine, args) -> int:
    info = load(engine, args)
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


_FILE_COMMANDS = {"show": cmd_show, "export": cmd_export}  # files only: no engine needed
_ENGINE_COMMANDS = {"info": cmd_info, "generate": cmd_generate, "attribute": cmd_attribute, "patch": cmd_patch,
                    "routes": cmd_routes}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    prepare_environment()  # before torch loads
    args = build_parser().parse_args(argv)
    log_path = setup_logging(args.verbose)
    try:
        if args.command in _FILE_COMMANDS:
            return _FILE_COMMANDS[args.command](args)
        engine = EngineService(ThreadTuner(parse_threads(args.threads)))
        try:
            return _ENGINE_COMMANDS[args.command](engine, args)
        finally:
            engine.shutdown(wait=True)  # stops a run still going (a reader that went away, an error)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # stdout's reader went away (`| head`): end quietly, as Unix tools do
        return quiet_broken_pipe()
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
