"""The head-role scores computed by hand, the independent reference for session/head_roles.py and
the engine's captured weights: transformers' own eager attention over a run's final tokens (one
plain forward pass with output_attentions=True), and the scores written out as plain loops from
their definitions (docs/attention-heads.md). Also: a session file as an OPT Desktop from before
the previous-token and induction weights wrote it."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

THRESHOLD, MARGIN, MOST = 0.4, 0.2, 3  # the documented marking rule, written out again on purpose


def eager_attentions(model, token_ids) -> np.ndarray:
    """(L, H, T, T) float64 weights of one full forward pass over `token_ids`, by transformers' eager
    attention (the engine's own attention kernel is put back afterwards)."""
    import torch

    implementation = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(torch.tensor([list(token_ids)]), output_attentions=True, use_cache=False)
    finally:
        model.set_attn_implementation(implementation)
    return torch.stack([a[0] for a in out.attentions]).double().numpy()


def targets(ids, t: int) -> list[int]:
    """Query t's induction targets: the key after each earlier copy j < t - 1 of its token."""
    return [j + 1 for j in range(t - 1) if ids[j] == ids[t]]


def hand_scores(A: np.ndarray, ids, fed: int) -> dict[str, tuple[np.ndarray, np.ndarray] | None]:
    """{role: ((L, H) score, (L, H) chance baseline)} over the queries 1..fed-1; induction None when no
    query has an earlier copy."""
    queries = range(1, fed)
    even = np.mean([1 / (t + 1) for t in queries])
    out: dict = {
        "previous": (np.mean([A[:, :, t, t - 1] for t in queries], axis=0), np.full(A.shape[:2], even)),
        "sink": (np.mean([A[:, :, t, 0] for t in queries], axis=0), np.full(A.shape[:2], even)),
    }
    induction, chance = [], []
    for t in queries:
        keys = targets(ids, t)
        if keys:
            induction.append(A[:, :, t, keys].sum(-1))
            chance.append((1 - A[:, :, t, 0]) * len(keys) / t)
    out["induction"] = (np.mean(induction, axis=0), np.mean(chance, axis=0)) if induction else None
    return out


def hand_marks(scores: dict) -> dict[str, list[tuple[float, int, int]]]:
    """{role: [(score, layer, head)]} of every head passing the rule, strongest first."""
    out = {}
    for role, pair in scores.items():
        if pair is not None:
            score, baseline = pair
            heads = [(float(score[la, h]), la, h) for la in range(score.shape[0]) for h in range(score.shape[1])
                     if score[la, h] >= THRESHOLD and score[la, h] - baseline[la, h] >= MARGIN]
            out[role] = sorted(heads, key=lambda x: (-x[0], x[1], x[2]))
    return out


def hand_names(scores: dict) -> dict[str, str]:
    """{role: what the view lists for it}: 'L0H1 (0.93), L2H0 (0.71)', or 'none (strongest L1H2, 0.31)'."""
    out = {}
    for role, heads in hand_marks(scores).items():
        names = ", ".join(f"L{la}H{h} ({s:.2f})" for s, la, h in heads[:MOST])
        if len(heads) > MOST:
            names += f" and {len(heads) - MOST} more"
        if not heads:
            score = scores[role][0]
            la, h = np.unravel_index(int(np.argmax(score)), score.shape)
            names = f"none (strongest L{la}H{h}, {score[la, h]:.2f})"
        out[role] = names
    return out


def without_role_statistics(path: Path) -> Path:
    """Rewrite a saved session as an OPT Desktop from before `attn_previous` and `attn_induction`
    wrote it: the same members, those arrays left out."""
    from safetensors.numpy import load as load_arrays, save as save_arrays

    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    arrays = load_arrays(members["arrays.safetensors"])
    members["arrays.safetensors"] = save_arrays(
        {k: v for k, v in arrays.items() if not k.endswith(("attn_previous", "attn_induction"))})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    path.write_bytes(buffer.getvalue())
    return path
