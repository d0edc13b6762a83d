"""Synthetic runs with interventions and pairs of runs that part at a known position (no torch)."""

from __future__ import annotations

import dataclasses

import numpy as np

from fakes import fake_events
from opt_desktop.engine.messages.events import Finished, HeadMaskChanged, Started, TokenGenerated
from opt_desktop.session import RunTrace


def build(events) -> RunTrace:
    trace = RunTrace(events[0])
    for ev in events[1:]:
        trace.apply(ev)
    return trace


def intervened_trace(head_mask=(), hidden_positions=(), changes=(), **kwargs) -> RunTrace:
    """A fake run that started with `head_mask` / `hidden_positions` and had the mask changed mid-run:
    `changes` is ((generated index, mask), ...), each applied just before that token."""
    events = fake_events(**kwargs)
    events[0] = dataclasses.replace(events[0], head_mask=tuple(head_mask), hidden_positions=tuple(hidden_positions))
    out = []
    pending = dict(changes)
    for ev in events:
        if isinstance(ev, TokenGenerated) and ev.index in pending:
            out.append(HeadMaskChanged(index=ev.index, head_mask=tuple(pending.pop(ev.index))))
        out.append(ev)
    return build(out)


def with_alternatives(events, position: int, top_ids: tuple[int, ...]):
    """The same run with the alternatives recorded at generated `position` replaced by `top_ids`."""
    out = []
    for ev in events:
        if isinstance(ev, TokenGenerated) and ev.position == position:
            ev = dataclasses.replace(ev, top_ids=top_ids, top_probs=tuple(np.linspace(0.4, 0.05, len(top_ids))),
                                     top_pieces=tuple(f"alt{t}" for t in top_ids))
        out.append(ev)
    return out


def diverging_pair(diverge_at: int, n_prompt: int = 4, n_gen: int = 6, seed: int = 0, **started_changes):
    """Runs A and B: the same prompt and first tokens, then different tokens from generated position
    `diverge_at` on (B also scores its tokens differently there). `started_changes` alter B's Started."""
    events_a = fake_events(n_prompt=n_prompt, n_gen=n_gen, seed=seed)
    events_b = []
    ids_b = []
    for ev in events_a:
        if isinstance(ev, Started):
            ev = dataclasses.replace(ev, **started_changes)
        elif isinstance(ev, TokenGenerated):
            if ev.position >= diverge_at:
                ev = dataclasses.replace(ev, token_id=ev.token_id + 1, piece=f" v{ev.index}", text=f" v{ev.index}",
                                         logprob=ev.logprob - 0.5, entropy=ev.entropy + 0.25)
            ids_b.append(ev.token_id)
        elif isinstance(ev, Finished):
            ev = dataclasses.replace(ev, token_ids=tuple(ids_b),
                                     text="".join(e.text for e in events_b if isinstance(e, TokenGenerated)))
        events_b.append(ev)
    return build(events_a), build(events_b)


def capture_next_menu() -> list[list[str]]:
    """Close the next popup menu as soon as it opens and record its entries' texts (the real
    `QMenu.exec` path runs; the list is filled once the menu has been shown)."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    shown: list[list[str]] = []

    def close() -> None:
        menu = QApplication.activePopupWidget()
        if menu is None:
            QTimer.singleShot(10, close)
            return
        shown.append([a.text() for a in menu.actions()])
        menu.close()

    QTimer.singleShot(0, close)
    return shown
