"""A two-layer OPT whose heads are set by hand: L0H0 attends to the previous token, L1H0 is an
induction head, L1H1 a sink head. Its greedy text continues a repeated sequence.

The residual stream holds three codes in their own 128 dimensions: the token (random unit vectors),
its position (orthonormal), and, written by L0H0, the previous token's code. Every code sums to 0,
so LayerNorm only scales the stream (by about the same amount at every position). L0H0's query is
its position's code turned to the previous position's, its key the position; L1H0's query is the
token's code, its key the previous-token code that L0H0 wrote, and it copies the attended token's
code back, three times as strong as the current token's, so the tied output head predicts the token
that followed the earlier copy. L1H1's query is a constant (its bias), matching position 0's key.
Every other weight is 0: the other heads attend evenly and write nothing, the MLPs add nothing.
"""

from __future__ import annotations

from pathlib import Path

M = 128  # width of each code; a head is M wide (4 heads over 4 M)
PREVIOUS, INDUCTION, SINK = (0, 0), (1, 0), (1, 1)  # (layer, head) of each role


def _centred_unit(x):
    x = x - x.mean(-1, keepdim=True)
    return x / x.norm(dim=-1, keepdim=True)


def build_induction_opt(vocab_size: int, context: int = 120, seed: int = 0):
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    if context > M - 1:
        raise ValueError(f"at most {M - 1} positions have orthonormal codes that sum to 0")
    d = 4 * M
    config = OPTConfig(vocab_size=vocab_size, hidden_size=d, word_embed_proj_dim=d, num_hidden_layers=2,
                       num_attention_heads=4, ffn_dim=16, max_position_embeddings=context, do_layer_norm_before=True,
                       dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, pad_token_id=1, bos_token_id=2,
                       eos_token_id=2)
    model = OPTForCausalLM(config)
    g = torch.Generator().manual_seed(seed)
    tok, pos, prev = slice(0, M), slice(M, 2 * M), slice(2 * M, 3 * M)
    eye = torch.eye(M)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
        decoder = model.model.decoder
        decoder.embed_tokens.weight[:, tok] = _centred_unit(torch.randn(vocab_size, M, generator=g))
        # Orthonormal position codes in the M - 1 dimensions that sum to 0.
        basis = torch.linalg.qr(torch.randn(M, M, generator=g) - 1.0 / M)[0]
        ones = torch.full((M, 1), M ** -0.5)
        codes = torch.linalg.qr(torch.cat([ones, basis[:, : M - 1]], 1))[0][:, 1: context + 1].T  # (context, M)
        decoder.embed_positions.weight[2: 2 + context, pos] = codes  # OPT's positions start at row 2
        layer0, layer1 = decoder.layers
        # x̂ = LayerNorm(x) = x / σ: σ² = |x|² / d with |x|² = 2 codes in layer 0, 3 in layer 1.
        scale0, scale1 = (d / 2) ** 0.5, (d / 3) ** 0.5
        turn = sum(torch.outer(codes[t - 1], codes[t]) for t in range(1, context))  # code(t) -> code(t-1)
        a0 = layer0.self_attn
        a0.q_proj.weight[0:M, pos] = turn * 40.0 / scale0 ** 2 * M ** 0.5
        a0.k_proj.weight[0:M, pos] = eye
        a0.v_proj.weight[0:M, tok] = eye
        a0.out_proj.weight[prev, 0:M] = eye / scale0
        a1 = layer1.self_attn
        a1.q_proj.weight[0:M, tok] = eye * 40.0 / scale1 ** 2 * M ** 0.5
        a1.k_proj.weight[0:M, prev] = eye
        a1.v_proj.weight[0:M, tok] = eye
        a1.out_proj.weight[tok, 0:M] = eye * 3.0 / scale1
        a1.q_proj.bias[M: 2 * M] = codes[0] * 20.0 / scale1 * M ** 0.5
        a1.k_proj.weight[M: 2 * M, pos] = eye
    return model


def save_induction_opt(folder: Path, tokenizer, context: int = 120) -> Path:
    vocab = max(len(tokenizer), 8)
    vocab += (-vocab) % 8
    model = build_induction_opt(vocab, context)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
