"""The command line's arguments: one parser, a sub-command each, and the settings they make."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from ..engine import GenerationSettings
from ..engine.messages.settings import DEFAULT_SOURCE, Device, DType
from ..session import EXPORT_FORMATS

DESCRIPTION = "opt-desktop-cli: the engine without a window, for scripts and quick checks."


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
    p.add_argument("--threads", default="auto", metavar="auto|N",
                   help="CPU threads to compute with: 'auto' (default) follows the machine's load, N fixes them")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opt-desktop-cli", description=DESCRIPTION)
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
