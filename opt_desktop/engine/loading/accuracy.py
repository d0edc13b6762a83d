"""How far an approximate precision mode drifts from float32: the next-token distributions of both
over one reference text, compared position by position (teacher-forced: both see the same tokens),
and whether a float32 copy to measure against fits in memory.

No torch at import (torch is imported when a measurement runs).
"""

from __future__ import annotations

from pathlib import Path

from ..messages.events import ModeAccuracy
from ..running.memory import available_memory

# Read by both float32 and the approximate mode when a model loads; its next-token distributions
# are compared position by position (teacher-forced: both see the same tokens).
REFERENCE_TEXT = (
    "The village lay at the foot of the mountains, where the river slowed and widened before it reached "
    "the sea. Every spring the fishermen mended their nets on the shore, and the children watched the "
    "boats come back in the evening light, counting them one by one until the last had returned."
)


def reference_ids(tokenizer, bos_token_id: int):
    """REFERENCE_TEXT as the engine would feed it (</s> first), as a (1, T) tensor."""
    import torch

    ids = tokenizer(REFERENCE_TEXT)["input_ids"]
    if not ids or ids[0] != bos_token_id:
        ids = [bos_token_id] + ids
    return torch.tensor([ids])


def next_token_logprobs(model, input_ids):
    """(T, V) float64 log-probabilities of the next token at every position, from one forward pass.

    float64 because the KL of a close approximation (~1e-4) sums 50k tiny differences of log-probs:
    float32 rounding alone moved it by half a percent."""
    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(input_ids=input_ids.to(device), use_cache=False).logits[0]
        return torch.log_softmax(logits.double(), dim=-1).cpu()


def compare(reference, approx) -> ModeAccuracy:
    """Mean KL(reference || approx) over positions, and how often both pick the same top token."""
    import torch

    kl = torch.nn.functional.kl_div(approx, reference, reduction="none", log_target=True).sum(-1)
    agree = (reference.argmax(-1) == approx.argmax(-1)).float().mean()
    # Rounding can leave a KL a hair below 0 where the distributions all but coincide.
    return ModeAccuracy(mean_kl=max(0.0, float(kl.mean())), top1_agreement=float(agree),
                        n_positions=int(reference.shape[0]))


def float32_copy_fits(folder: Path | None) -> bool:
    """Whether a float32 copy of the checkpoint in `folder` fits in the memory available now, with
    room to spare, so the loader may hold one to measure a half-precision mode against."""
    if folder is None:
        return True  # demo-random, made in code: a few megabytes
    stored = sum(p.stat().st_size for pattern in ("*.safetensors", "pytorch_model*.bin") for p in folder.glob(pattern))
    f32_bytes = stored * 2  # OPT checkpoints are stored in float16; a float32 one is counted twice, safely
    available = available_memory()
    return available is not None and f32_bytes * 1.25 < available
