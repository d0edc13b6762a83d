"""The Output view's menu entries that hide prompt tokens from attention in the next run (or show
them again): for the selected prompt tokens, else the one under the mouse."""

from __future__ import annotations

from typing import Callable, Sequence

from PySide6.QtWidgets import QMenu

from ...formatting import position_ranges
from .token_table import menu_text

ChangeFn = Callable[..., None]  # change(add=positions) / change(remove=positions)


def add_hiding_actions(menu: QMenu, targets: Sequence[int] | None, hidden: Sequence[int], change: ChangeFn) -> None:
    """`targets`: the prompt positions the menu is about (None: the prompt is not shown); `hidden`: the
    positions the next run will hide now."""
    menu.addSection("Attention")
    if targets is None:
        menu.addAction("Show the prompt tokens (View menu) to hide some from attention").setEnabled(False)
    else:
        if 0 in targets:
            menu.addAction("The leading </s> (position 0) cannot be hidden: every token "
                           "must be able to attend to it").setEnabled(False)
        targets = [p for p in targets if p > 0]
        if not targets:
            menu.addAction("Select prompt tokens to hide them from attention").setEnabled(False)
        else:
            to_hide = [p for p in targets if p not in hidden]
            to_show = [p for p in targets if p in hidden]
            if to_hide:
                menu.addAction(menu_text(f"Hide from attention (position{'s' if len(targets) > 1 else ''} "
                                         f"{position_ranges(targets)})"), lambda: change(add=to_hide))
            if to_show:
                menu.addAction(menu_text(f"Show to attention again (position{'s' if len(to_show) > 1 else ''} "
                                         f"{position_ranges(to_show)})"), lambda: change(remove=to_show))
    if hidden:
        menu.addAction("Clear hidden tokens", lambda: change(remove=tuple(hidden)))
