"""How hidden-state rows are named, the same in the window, the CLI, the files and the exports.

Row 0 is the input of decoder layer 0 (`embed`); row i + 1 is the output of `decoder.layers[i]`,
so layers count from 0 as everywhere else: rows read `embed, 0, 1, …, L-1`.
"""

from __future__ import annotations


def row_label(row: int) -> str:
    """"embed", then the layer whose output the row is: "0" … "L-1"."""
    return "embed" if row == 0 else str(row - 1)


def row_tick(row: int) -> str:
    """The label on a plot's axis, where room is short: "emb", "0" … "L-1"."""
    return "emb" if row == 0 else str(row - 1)


def row_name(row: int) -> str:
    """"embed", "layer 0" … "layer L-1": the row in a sentence."""
    return "embed" if row == 0 else f"layer {row - 1}"


def row_description(row: int) -> str:
    """"embed (the input of layer 0)", "output of layer i": what the row holds."""
    return "embed (the input of layer 0)" if row == 0 else f"output of layer {row - 1}"
