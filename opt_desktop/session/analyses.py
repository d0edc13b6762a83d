"""Analyses kept with a run: results computed on it after it was made.

Each is a kind, plain JSON parameters, named numpy arrays and the text of the token ids it lists
(docs/session-format.md, "Analyses"). Five kinds are read here: the logit lens of every position
(`logit_lens`), head importance (`head_importance`), the attribution of one generated token
(`attribution`), activation patching from this run into a corrupted one (`patching`) and the
information-flow routes of every position (`routes`, stored as routes_format.py says). Any other
kind is kept as it was read and saved back unchanged, so a file gains kinds without a new schema and
an older reader never loses what a newer one wrote.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..engine.messages.results import Attribution, HeadImportance, LensTable, Patching, Routes
from . import limits, routes_format
from .jsondoc import depth

LENS = "logit_lens"
HEAD_IMPORTANCE = "head_importance"
ATTRIBUTION = "attribution"
PATCHING = "patching"
ROUTES = routes_format.ROUTES

KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
ARRAY_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# Array dtypes an analysis may use (numpy names, as session.json writes them).
DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64, "int64": np.int64,
          "int32": np.int32, "bool": np.bool_}
MAX_PARAMS_DEPTH = 4
MAX_PARAMS_VALUES = 4096


@dataclass
class Analysis:
    kind: str
    params: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    pieces: dict[int, str] = field(default_factory=dict)  # token id -> the token shown alone


@dataclass(frozen=True)
class RunShape:
    """What an analysis of one run is checked against."""

    n_layers: int
    n_heads: int
    n_positions: int
    n_prompt: int
    vocab_size: int


# --- the two kinds this version reads ----------------------------------------------------------


def lens_analysis(table: LensTable) -> Analysis:
    return Analysis(kind=LENS, params={"top_k": table.top_k},
                    arrays={"top_ids": np.ascontiguousarray(table.top_ids, np.int64),
                            "top_probs": np.ascontiguousarray(table.top_probs, np.float32),
                            "target_logprob": np.ascontiguousarray(table.target_logprob, np.float32),
                            "target_rank": np.ascontiguousarray(table.target_rank, np.int64)},
                    pieces={int(k): str(v) for k, v in table.pieces.items()})


def lens_from(analysis: Analysis) -> LensTable:
    a = analysis.arrays
    return LensTable(top_ids=a["top_ids"], top_probs=a["top_probs"], target_logprob=a["target_logprob"],
                     target_rank=a["target_rank"], pieces=dict(analysis.pieces))


def importance_analysis(result: HeadImportance) -> Analysis:
    baseline = float(result.baseline_logprob)
    return Analysis(kind=HEAD_IMPORTANCE,
                    params={"scale": float(result.scale), "completed": bool(result.completed),
                            "n_prompt": int(result.n_prompt),
                            "baseline_logprob": baseline if math.isfinite(baseline) else None},
                    arrays={"delta": np.ascontiguousarray(result.delta, np.float32)})


def importance_from(analysis: Analysis) -> HeadImportance:
    p = analysis.params
    baseline = p.get("baseline_logprob")
    return HeadImportance(delta=analysis.arrays["delta"],
                          baseline_logprob=float("nan") if baseline is None else float(baseline),
                          completed=bool(p["completed"]), scale=float(p["scale"]), n_prompt=int(p["n_prompt"]))


def _finite_or_none(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def attribution_analysis(result: Attribution, position: int) -> Analysis:
    """The attribution of the token at `position` (its input: the run's tokens before it)."""
    return Analysis(kind=ATTRIBUTION,
                    params={"position": int(position), "method": result.method, "steps": result.steps,
                            "target_id": int(result.target_id),
                            "alternative_id": None if result.alternative_id is None else int(result.alternative_id),
                            "logprob": _finite_or_none(result.logprob), "value": _finite_or_none(result.value),
                            "baseline_value": _finite_or_none(result.baseline_value),
                            "gradient_dtype": result.gradient_dtype, "note": result.note},
                    arrays={"scores": np.ascontiguousarray(result.scores, np.float32)})


def attribution_from(analysis: Analysis, token_ids) -> tuple[int, Attribution]:
    """(position, result) of a stored attribution; `token_ids` the run's whole sequence."""
    p = analysis.params
    nan = float("nan")
    position = int(p["position"])
    return position, Attribution(
        token_ids=np.asarray(token_ids[:position], np.int64), scores=analysis.arrays["scores"],
        target_id=int(p["target_id"]), alternative_id=p.get("alternative_id"), method=str(p["method"]),
        steps=p.get("steps"), logprob=nan if p.get("logprob") is None else float(p["logprob"]),
        value=nan if p.get("value") is None else float(p["value"]),
        baseline_value=nan if p.get("baseline_value") is None else float(p["baseline_value"]),
        gradient_dtype=str(p.get("gradient_dtype", "float32")), note=p.get("note"))


def patching_analysis(result: Patching, corrupt_label: str = "") -> Analysis:
    """Patching from this run's prompt (the clean one) into `result.corrupt_ids`."""
    return Analysis(kind=PATCHING,
                    params={"target_id": int(result.target_id), "clean_prob": float(result.clean_prob),
                            "corrupt_prob": float(result.corrupt_prob), "corrupt": corrupt_label,
                            "heads": bool(result.head_prob.size)},
                    arrays={"corrupt_ids": np.ascontiguousarray(result.corrupt_ids, np.int64),
                            "prob": np.ascontiguousarray(result.prob, np.float32),
                            "head_prob": np.ascontiguousarray(result.head_prob, np.float32)})


def patching_from(analysis: Analysis, clean_ids) -> Patching:
    p, a = analysis.params, analysis.arrays
    return Patching(clean_ids=np.asarray(clean_ids, np.int64), corrupt_ids=a["corrupt_ids"],
                    target_id=int(p["target_id"]), clean_prob=float(p["clean_prob"]),
                    corrupt_prob=float(p["corrupt_prob"]), prob=a["prob"], head_prob=a["head_prob"])


def routes_analysis(result: Routes) -> Analysis:
    return Analysis(kind=ROUTES, params=routes_format.routes_params(result), arrays=routes_format.routes_arrays(result))


def routes_from(analysis: Analysis, token_ids, n_heads: int) -> Routes:
    """Stored routes of a run whose whole sequence is `token_ids`, of a model with `n_heads` heads a layer."""
    return routes_format.routes_of(analysis.params, analysis.arrays, token_ids, n_heads)


# --- what session.json declares, checked before any array is read --------------------------------


def expected_arrays(kind: str, params: dict, shape: RunShape) -> dict[str, tuple[type, tuple[int, ...]]] | None:
    """The arrays a known kind must have (dtype, shape), from its parameters; None for other kinds.
    Raises ValueError when the parameters are not acceptable."""
    L, H, T = shape.n_layers, shape.n_heads, shape.n_positions
    if kind == LENS:
        k = params.get("top_k")
        if not _int(k) or not 1 <= k <= limits.MAX_LENS_TOP:
            raise ValueError(f"its top_k is {_show(k)}, expected a whole number from 1 to {limits.MAX_LENS_TOP}")
        return {"top_ids": (np.int64, (L + 1, T, k)), "top_probs": (np.float32, (L + 1, T, k)),
                "target_logprob": (np.float32, (L + 1, T)), "target_rank": (np.int64, (L + 1, T))}
    if kind == HEAD_IMPORTANCE:
        scale, completed, n_prompt = params.get("scale"), params.get("completed"), params.get("n_prompt")
        baseline = params.get("baseline_logprob")
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not 0.0 <= scale <= 2.0:
            raise ValueError(f"its scale is {_show(scale)}, expected a number from 0 to 2")
        if not isinstance(completed, bool):
            raise ValueError("its completed is not true or false")
        if not _int(n_prompt) or n_prompt != shape.n_prompt:
            raise ValueError(f"its n_prompt is {_show(n_prompt)}, but the run's prompt has {shape.n_prompt} tokens")
        if baseline is not None and (not isinstance(baseline, (int, float)) or isinstance(baseline, bool)):
            raise ValueError("its baseline_logprob is not a number")
        return {"delta": (np.float32, (L, H))}
    if kind == ATTRIBUTION:
        position, method, steps = params.get("position"), params.get("method"), params.get("steps")
        if not _int(position) or not 1 <= position < T:
            raise ValueError(f"its position is {_show(position)}, expected 1 to {T - 1}")
        if method not in ("ig", "ixg") or (steps is not None and (not _int(steps) or not 1 <= steps <= 4096)):
            raise ValueError(f"its method {_show(method)} or steps {_show(steps)} are not ones the app makes")
        for name in ("target_id", "alternative_id"):
            v = params.get(name)
            if (v is not None or name == "target_id") and (not _int(v) or not 0 <= v < shape.vocab_size):
                raise ValueError(f"its {name} is {_show(v)}, outside the vocabulary of {shape.vocab_size}")
        return {"scores": (np.float32, (position,))}
    if kind == PATCHING:
        target = params.get("target_id")
        if not _int(target) or not 0 <= target < shape.vocab_size:
            raise ValueError(f"its target_id is {_show(target)}, outside the vocabulary of {shape.vocab_size}")
        for name in ("clean_prob", "corrupt_prob"):
            v = params.get(name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
                raise ValueError(f"its {name} is {_show(v)}, expected a probability")
        P = shape.n_prompt
        heads = params.get("heads", True)
        return {"corrupt_ids": (np.int64, (P,)), "prob": (np.float32, (L + 1, P)),
                "head_prob": (np.float32, (L, H) if heads else (0, 0))}
    if kind == ROUTES:
        return routes_format.expected(params, L, H, T)
    return None


def check_declared(name: str, declared) -> tuple[type, tuple[int, ...]]:
    """An analysis array's declaration {"dtype": ..., "shape": [...]} -> (numpy dtype, shape)."""
    if not ARRAY_NAME_PATTERN.fullmatch(name):
        raise ValueError(f"it has an array named {name[:80]!r}; array names are letters, digits and _")
    if not isinstance(declared, dict) or set(declared) != {"dtype", "shape"}:
        raise ValueError(f"its array {name} is not declared as {{\"dtype\": ..., \"shape\": [...]}}")
    dtype, dims = declared["dtype"], declared["shape"]
    if dtype not in DTYPES:
        raise ValueError(f"its array {name} has the dtype {_show(dtype)}, expected one of {', '.join(DTYPES)}")
    if (not isinstance(dims, list) or len(dims) > limits.MAX_ARRAY_DIMS
            or not all(_int(d) and 0 <= d < 1 << 40 for d in dims)):  # the size below bounds them
        raise ValueError(f"its array {name} has an impossible shape")
    size = math.prod(dims) * np.dtype(DTYPES[dtype]).itemsize
    if size > limits.MAX_ARRAYS_BYTES:
        raise ValueError(f"its array {name} would need {size:,} bytes")
    return DTYPES[dtype], tuple(dims)


def check_params(params) -> None:
    """Parameters are a JSON object of plain values: shallow, finite, short texts."""
    if not isinstance(params, dict):
        raise ValueError("its params are not a JSON object")
    if depth(params, MAX_PARAMS_DEPTH) > MAX_PARAMS_DEPTH:
        raise ValueError(f"its params are nested more than {MAX_PARAMS_DEPTH} levels deep")
    count = 0
    stack = [params]
    while stack:
        item = stack.pop()
        count += 1
        if count > MAX_PARAMS_VALUES:
            raise ValueError(f"its params hold more than {MAX_PARAMS_VALUES} values")
        if isinstance(item, dict):
            for key in item:
                if len(key) > limits.MAX_NAME_CHARS:
                    raise ValueError("its params have a key that is too long")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and len(item) > limits.MAX_NAME_CHARS:
            raise ValueError("its params hold a text that is too long")
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("its params hold a number that is not finite")


def check_values(kind: str, arrays: dict[str, np.ndarray], shape: RunShape, pieces: dict[int, str]) -> None:
    """After reading: the values of a known kind are in range (ids in the vocabulary, probabilities
    in [0, 1], log-probabilities not above 0, ranks not negative). Raises ValueError."""
    if kind == LENS:
        ids = arrays["top_ids"]
        if ids.size and (ids.min() < 0 or ids.max() >= shape.vocab_size):
            raise ValueError(f"its top_ids hold token ids outside the vocabulary of {shape.vocab_size}")
        probs = arrays["top_probs"]
        if np.any((probs < 0) | (probs > 1.0001)):  # NaN compares false: allowed (not computed)
            raise ValueError("its top_probs hold values outside 0 to 1")
        if np.any(arrays["target_logprob"] > 1e-4):
            raise ValueError("its target_logprob holds values above 0")
        if arrays["target_rank"].size and arrays["target_rank"].min() < 0:
            raise ValueError("its target_rank holds negative ranks")
    elif kind == HEAD_IMPORTANCE:
        if np.isinf(arrays["delta"]).any():
            raise ValueError("its delta holds infinite values")
    elif kind == ATTRIBUTION:
        if np.isinf(arrays["scores"]).any():
            raise ValueError("its scores hold infinite values")
    elif kind == PATCHING:
        ids = arrays["corrupt_ids"]
        if ids.size and (ids.min() < 0 or ids.max() >= shape.vocab_size):
            raise ValueError(f"its corrupt_ids hold token ids outside the vocabulary of {shape.vocab_size}")
        for name in ("prob", "head_prob"):
            if np.any((arrays[name] < 0) | (arrays[name] > 1.0001)):
                raise ValueError(f"its {name} holds values outside 0 to 1")
    elif kind == ROUTES:
        routes_format.check(arrays, shape.n_heads)
    for tid in pieces:
        if not 0 <= tid < shape.vocab_size:
            raise ValueError(f"its pieces name the token id {tid}, outside the vocabulary of {shape.vocab_size}")


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _show(x) -> str:
    text = repr(x)
    return text if len(text) <= 40 else text[:39] + "…"
