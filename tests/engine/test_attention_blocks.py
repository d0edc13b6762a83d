"""The prompt's attention weights, recomputed a block of queries at a time after its first token,
against eager attention's softmax over the whole matrix, and their statistics against the plain formulas."""

import pytest
import torch

from opt_desktop.engine.running import attention
from opt_desktop.engine.running.capture import attention_stats, prompt_attention_stats

H, T, D = 3, 11, 8


@pytest.fixture
def qk():
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, H, T, D, generator=g), torch.randn(1, H, T, D, generator=g) * 2


def _eager(q, k, allowed):
    scores = (q @ k.transpose(-1, -2))[0]
    scores = scores.masked_fill(~allowed, torch.finfo(torch.float32).min)
    return torch.softmax(scores, -1)  # (H, T, T)


def _blocks(q, k, mask=None, **kwargs):
    return [(w.clone(), s.clone(), q0) for w, s, q0 in attention.weight_blocks(q, k, mask, 0, **kwargs)]


@pytest.mark.parametrize("causal_keys", [True, False])
@pytest.mark.parametrize("elements", [H * T * 4, 1 << 20])  # blocks of 4 queries; one block
def test_blocks_are_eager_softmax_of_a_causal_prompt(monkeypatch, qk, causal_keys, elements):
    monkeypatch.setattr(attention, "_CHUNK_ELEMENTS", elements)
    q, k = qk
    reference = _eager(q, k, torch.ones(T, T, dtype=torch.bool).tril())
    blocks = _blocks(q, k, causal_keys=causal_keys)
    step = min(T, elements // (H * T))
    assert [q0 for _, _, q0 in blocks] == list(range(0, T, step))
    for w, _, q0 in blocks:
        n, keys = w.shape[1], w.shape[2]
        assert keys == (q0 + n if causal_keys else T)  # causal blocks stop at their last query
        torch.testing.assert_close(w, reference[:, q0:q0 + n, :keys], atol=1e-6, rtol=1e-5)
        assert (w.sum(-1) - 1).abs().max() < 1e-5


def test_blocks_follow_a_boolean_mask(monkeypatch, qk):
    monkeypatch.setattr(attention, "_CHUNK_ELEMENTS", H * T * 5)
    q, k = qk
    allowed = torch.ones(T, T, dtype=torch.bool).tril()
    allowed[:, 4] = False  # position 4 hidden from every query but itself
    allowed[4, 4] = True
    reference = _eager(q, k, allowed)
    blocks = _blocks(q, k, allowed.view(1, 1, T, T))
    got = torch.cat([w for w, _, _ in blocks], 1)
    torch.testing.assert_close(got, reference, atol=1e-6, rtol=1e-5)


def test_statistics_of_blocks_equal_the_plain_formulas(monkeypatch, qk):
    monkeypatch.setattr(attention, "_CHUNK_ELEMENTS", H * T * 4)
    q, k = qk
    reference = attention_stats(_eager(q, k, torch.ones(T, T, dtype=torch.bool).tril()), 0)  # (3, H, T)
    ours = torch.cat([prompt_attention_stats(w, s, q0) for w, s, q0 in _blocks(q, k)], -1)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_a_short_prompt_is_one_block_of_its_own_size(qk):
    """A block never has more queries than the prompt (its masks are made at the block's size)."""
    q, k = qk
    blocks = _blocks(q[:, :, :2], k[:, :, :2])
    assert len(blocks) == 1 and blocks[0][0].shape == (H, 2, 2)
