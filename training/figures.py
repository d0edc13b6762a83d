"""What the demo model must show, measured with plain forward passes of `OPTForCausalLM`.

The training script prints these figures and records them; the tests assert them on the shipped
weights. Nothing here uses the app's capture code: attentions come from `output_attentions=True`
under eager attention, residual rows from `output_hidden_states=True`.
"""

from __future__ import annotations

import math

import torch

BOS = 2  # OPT's </s>, which starts every sequence
PROMPT = "The return value of"  # the greedy sample's prompt


@torch.no_grad()
def held_out_perplexity(model, token_ids: list[int], window: int) -> float:
    """exp(mean next-token NLL) over non-overlapping windows, each led by </s> as in training."""
    step = window - 1
    total, count = 0.0, 0
    for start in range(0, len(token_ids) - 1, step):
        chunk = token_ids[start:start + step]
        if len(chunk) < 2:
            break
        ids = torch.tensor([[BOS] + chunk])
        logits = model(input_ids=ids).logits[0, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
        total += float(nll)
        count += ids.shape[1] - 1
    return math.exp(total / count)


@torch.no_grad()
def sink_weights(model, ids: torch.Tensor) -> torch.Tensor:
    """[layers, heads]: each head's attention weight on position 0, averaged over queries 1..T-1."""
    out = model(input_ids=ids, output_attentions=True)
    return torch.stack([a[0, :, 1:, 0].float().mean(-1) for a in out.attentions])


@torch.no_grad()
def held_out_sink_weights(model, token_ids: list[int], window: int) -> torch.Tensor:
    """[layers, heads]: each head's mean attention weight on position 0 over all the held-out text.

    The text is cut into the same non-overlapping windows as held_out_perplexity (each led by </s>,
    as in training); every query after position 0 of every window counts once."""
    step = window - 1
    total, count = None, 0
    for start in range(0, len(token_ids) - 1, step):
        chunk = token_ids[start:start + step]
        if len(chunk) < 2:
            break
        out = model(input_ids=torch.tensor([[BOS] + chunk]), output_attentions=True)
        sums = torch.stack([a[0, :, 1:, 0].float().sum(-1) for a in out.attentions])
        total = sums if total is None else total + sums
        count += len(chunk)
    return total / count


@torch.no_grad()
def previous_token_scores(model, ids: torch.Tensor) -> torch.Tensor:
    """[layers, heads]: each head's mean attention weight from position t to t-1 (t = 2 … T-1)."""
    out = model(input_ids=ids, output_attentions=True)
    return torch.stack([a[0].float().diagonal(-1, dim1=-2, dim2=-1)[:, 1:].mean(-1) for a in out.attentions])


@torch.no_grad()
def induction_scores(model, vocab_size: int, length: int = 20, seed: int = 0) -> torch.Tensor:
    """[layers, heads]: on </s> + a random sequence twice, each head's mean attention weight from a
    token of the second copy to the token after its first occurrence (what an induction head does)."""
    ids = repeated_random_tokens(vocab_size, length, seed)
    out = model(input_ids=ids, output_attentions=True)
    # the query at 1+length+i holds token i, whose next token sits at 2+i: length-1 back. diagonal(-k)[j]
    # is the weight of query j+k on key j, so keys 2 … length+1 are the second copy's queries.
    return torch.stack([a[0].float().diagonal(-(length - 1), dim1=-2, dim2=-1)[:, 2:].mean(-1)
                        for a in out.attentions])


def repeated_random_tokens(vocab_size: int, length: int = 20, seed: int = 0) -> torch.Tensor:
    """</s> then `length` random ordinary tokens (no special ones), twice: [1, 1 + 2 * length]."""
    g = torch.Generator().manual_seed(seed)
    seq = torch.randint(4, vocab_size, (length,), generator=g)
    return torch.cat([torch.tensor([BOS]), seq, seq]).unsqueeze(0)


@torch.no_grad()
def prompt_ranks(model, ids: torch.Tensor) -> torch.Tensor:
    """[T-1]: the 1-based rank of token t under the model's distribution at t-1."""
    logits = model(input_ids=ids).logits[0, :-1].float()
    actual = logits.gather(-1, ids[0, 1:, None])
    return (logits > actual).sum(-1) + 1


def induction_median_rank(model, vocab_size: int, length: int = 20, seed: int = 0) -> float:
    """Median rank of the second copy's tokens in a repeated random sequence."""
    ids = repeated_random_tokens(vocab_size, length, seed)
    ranks = prompt_ranks(model, ids)
    second = ranks[length:]  # the tokens at positions length+1 .. 2*length
    return float(second.float().median())


@torch.no_grad()
def lens_agreement(model, ids: torch.Tensor) -> list[float]:
    """Per residual row (embed, layer 0 … L-1): the share of positions whose logit-lens top-1 equals
    the model's own top-1. Rows are the decoder's residual stream (each layer's output), read
    through final_layer_norm and lm_head as the lens does for pre-LayerNorm OPT."""
    decoder = model.model.decoder
    rows: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda m, i, o: rows.append(o[0] if isinstance(o, tuple) else o))
             for layer in decoder.layers]
    try:
        out = model(input_ids=ids, output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()
    final = out.logits[0].argmax(-1)
    residual = [out.hidden_states[0]] + rows  # hidden_states[0] is the embedding row (tokens + positions)
    shares = []
    for h in residual:
        x = decoder.final_layer_norm(h) if decoder.final_layer_norm is not None else h
        if decoder.project_out is not None:
            x = decoder.project_out(x)
        top = model.lm_head(x)[0].argmax(-1)
        shares.append(float((top == final).float().mean()))
    return shares


@torch.no_grad()
def greedy_ids(model, tokenizer, prompt: str, max_new_tokens: int = 48) -> list[int]:
    """Greedy continuation of `prompt` (ids of the new tokens only), stopping at </s>."""
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def longest_run(ids: list[int]) -> int:
    """The longest run of one token repeated back to back."""
    best = run = 0
    prev = None
    for t in ids:
        run = run + 1 if t == prev else 1
        prev = t
        best = max(best, run)
    return best


# --- what training prints and records -------------------------------------------------------------

def measure(model, tokenizer, held_ids: list[int], context: int) -> dict:
    """The figures the tests assert, on the model as given (eager attention for the weights)."""
    model.eval()
    model.set_attn_implementation("eager")
    sample = torch.tensor([[BOS] + held_ids[: context - 1]])
    sinks = held_out_sink_weights(model, held_ids, context)
    gen = greedy_ids(model, tokenizer, PROMPT)
    text = tokenizer.decode(gen)
    return {
        "held_out_perplexity": held_out_perplexity(model, held_ids, context),
        "max_sink_weight_per_layer": [round(float(v), 4) for v in sinks.max(-1).values],
        "induction_median_rank": induction_median_rank(model, model.config.vocab_size),
        "induction_median_rank_seeds_0_1_2": [induction_median_rank(model, model.config.vocab_size, seed=s)
                                              for s in range(3)],
        "lens_top1_agreement": [round(v, 4) for v in lens_agreement(model, sample)],
        "max_previous_token_score_per_layer":
            [round(float(v), 4) for v in previous_token_scores(model, sample).max(-1).values],
        "max_induction_score_per_layer":
            [round(float(v), 4) for v in induction_scores(model, model.config.vocab_size).max(-1).values],
        "greedy_prompt": PROMPT,
        "greedy_tokens": len(gen),
        "greedy_longest_run": longest_run(gen),
        "greedy_text": text,
    }


def progress(model, tokenizer, held_ids: list[int], context: int) -> dict:
    """A few figures along the way (a slice of the held-out text only), to watch heads form."""
    r = measure(model, tokenizer, held_ids[: 8 * context], context)
    print(f"      held-out ppl (slice) {r['held_out_perplexity']:.1f}  sinks {r['max_sink_weight_per_layer']}  "
          f"induction rank {r['induction_median_rank_seeds_0_1_2']}  lens {r['lens_top1_agreement']}\n"
          f"      heads (max per layer): previous-token {r['max_previous_token_score_per_layer']}  "
          f"induction {r['max_induction_score_per_layer']}\n"
          f"      greedy: {r['greedy_text'][:120]!r}", flush=True)
    return {k: r[k] for k in ("held_out_perplexity", "max_sink_weight_per_layer", "induction_median_rank_seeds_0_1_2",
                              "lens_top1_agreement", "max_previous_token_score_per_layer",
                              "max_induction_score_per_layer", "greedy_text")}
