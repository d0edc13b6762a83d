"""`attribute`, `patch` and `routes`: why the model predicts a token, where that lives, and how
information flows to it, as tables or JSON."""

from __future__ import annotations

import json
import math
import sys

import numpy as np

from ..engine.jobs.engine import Engine
from ..engine.messages.interventions_spec import parse_head_mask, parse_positions
from ..engine.messages.requests import AttributionRequest, PatchingRequest, RoutesRequest
from .jobs import load, pieces, run_job, single_token, tokenize
from .terminal import jsonable, note


def _interventions(args, info) -> tuple[tuple, tuple]:
    hidden = parse_positions(args.hide_positions) if args.hide_positions else ()
    mask = parse_head_mask(args.mask_heads, info.n_layers, info.n_heads) if args.mask_heads else ()
    return mask, hidden


def _bar(value: float, scale: float, width: int = 20) -> str:
    if not math.isfinite(value) or scale <= 0:
        return ""
    return ("+" if value >= 0 else "-") * max(0, round(abs(value) / scale * width))


def _table(values: np.ndarray, row_labels, col_labels, digits: int = 2) -> list[str]:
    w = digits + 4
    head = f"{'':>6} " + " ".join(f"{c:>{w}}" for c in col_labels)
    lines = [head]
    for label, row in zip(row_labels, values):
        lines.append(f"{label:>6} " + " ".join(f"{'-':>{w}}" if not math.isfinite(v) else
                                               f"{round(v, digits) + 0.0:>{w}.{digits}f}" for v in row))
    return lines


def cmd_attribute(engine: Engine, args) -> int:
    info = load(engine, args)
    ids = tokenize(engine, args.prompt).ids
    target = None if args.target is None else single_token(engine, args.target, "target")
    alternative = None if args.alternative is None else single_token(engine, args.alternative, "alternative")
    mask, hidden = _interventions(args, info)
    result = run_job(engine, AttributionRequest(tuple(ids), target, args.method, args.steps, alternative,
                                                tuple(mask), tuple(hidden)))
    if result.note:
        note(f"note: {result.note}")
    named = pieces(engine, [*(int(i) for i in result.token_ids), result.target_id,
                            *(() if result.alternative_id is None else (result.alternative_id,))])
    tokens = named[:len(result.token_ids)]
    target_text = named[len(result.token_ids)]
    if args.json:
        print(json.dumps(jsonable({
            "tokens": tokens, "token_ids": result.token_ids, "scores": result.scores, "target": target_text,
            "target_id": result.target_id, "logprob": result.logprob, "method": result.method, "steps": result.steps,
        }), ensure_ascii=False))
        return 0
    how = "input x gradient" if result.method == "ixg" else f"integrated gradients, {result.steps} steps"
    what = "log p(target)" if result.alternative_id is None else f"logit(target) - logit({named[-1]!r})"
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


def cmd_patch(engine: Engine, args) -> int:
    info = load(engine, args)
    clean = tokenize(engine, args.clean).ids
    corrupt = tokenize(engine, args.corrupt).ids
    target = single_token(engine, args.target, "target")
    mask, hidden = _interventions(args, info)
    result = run_job(engine, PatchingRequest(tuple(clean), tuple(corrupt), target, True, tuple(mask), tuple(hidden)))
    named = pieces(engine, [*(int(i) for i in result.clean_ids), target])
    tokens = named[:-1]
    if args.json:
        print(json.dumps(jsonable({
            "rows": list(result.row_labels), "tokens": tokens, "clean_prob": result.clean_prob,
            "corrupt_prob": result.corrupt_prob, "prob": result.prob, "heads": result.head_prob,
        }), ensure_ascii=False))
        return 0
    print(f"target {named[-1]!r} (id {target}): p = {result.clean_prob:.4g} clean, "
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


def cmd_routes(engine: Engine, args) -> int:
    from ..session.routes_text import strongest_table, write_routes_json

    info = load(engine, args)
    tokens = tokenize(engine, args.prompt)  # by the engine's tokenizer, wherever it runs
    mask, hidden = _interventions(args, info)
    result = run_job(engine, RoutesRequest(tuple(tokens.ids), tuple(hidden), ((0, tuple(mask)),), dense=args.json))
    if args.json:
        write_routes_json(result, sys.stdout)
    else:
        print("\n".join(strongest_table(result, list(tokens.pieces), threshold=args.threshold)))
    return 0
