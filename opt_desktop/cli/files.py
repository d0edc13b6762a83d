"""`show` and `export`: session files, read without an engine."""

from __future__ import annotations

import sys

from ..session import load_session, write_export
from ..session.describe import (
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
from ..session.export import export_text


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
