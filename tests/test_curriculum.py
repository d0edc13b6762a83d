"""The synthetic rows of the demo's training curriculum hold what their docstrings promise."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for training/
from training.curriculum import BOS, Batches, Phase  # noqa: E402

STREAM = torch.arange(100, 2000)  # "text": a stream no synthetic row can be mistaken for


def _rows(style, copy=3, context=64, period=(8, 24)):
    b = Batches(STREAM, [Phase(1, context, 4, copy, period, style=style)], 4096, torch.Generator().manual_seed(1))
    ids, labels = b(0)
    return ids[-copy:], labels[-copy:], ids[:-copy]


def test_skip_rows_repeat_the_first_of_every_three_and_score_everything():
    ids, labels, text = _rows("skip")
    assert (ids[:, 0] == BOS).all()
    assert torch.equal(ids[:, 3::3], ids[:, 1:-2:3][:, : ids[:, 3::3].shape[1]])
    assert (ids[:, 1:] >= 4).all() and (ids[:, 1:] < 4096).all()  # ordinary tokens only
    assert torch.equal(labels, ids)  # nothing hidden from the loss
    assert ((text[:, 1:] >= 100) & (text[:, 1:] < 2000)).all()  # the other rows stay text


def _longest_repeat(row: list[int]) -> int:
    """The length of the longest stretch of tokens that occurs twice in `row`."""
    for length in range(len(row) // 2, 0, -1):
        grams = [tuple(row[i:i + length]) for i in range(len(row) - length + 1)]
        if len(set(grams)) < len(grams):
            return length
    return 0


def test_noise_rows_hold_one_sequence_twice_in_random_tokens_all_scored():
    ids, labels, text = _rows("noise")
    assert torch.equal(labels, ids)  # nothing hidden from the loss
    for row in ids:
        assert row[0] == BOS and (row[1:] >= 4).all()
        assert 8 <= _longest_repeat(row[1:].tolist()) <= 24  # the inserted sequence, in the phase's lengths
    assert all(_longest_repeat(r[1:].tolist()) == 0 for r in text)  # text rows: the stream, where nothing repeats


def test_styles_joined_by_plus_share_the_copy_rows():
    ids, labels, text = _rows("noise+skip", copy=3)
    noise, skip = ids[:2], ids[2:]
    assert all(_longest_repeat(r[1:].tolist()) >= 8 for r in noise)
    assert torch.equal(skip[:, 3::3], skip[:, 1:-2:3][:, : skip[:, 3::3].shape[1]])
    assert len(text) == 1
