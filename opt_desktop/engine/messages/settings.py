"""Validated, plain-data requests that cross from the front ends into the engine.

Nothing here imports torch, so the GUI can build and check a request before torch has loaded.
`GenerationSettings` maps one to one onto transformers' `GenerationConfig` (imported lazily).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import SettingsError

DType = Literal["float32", "bfloat16", "float16", "int8"]  # int8: dynamic int8 linear layers (CPU)
Device = Literal["auto", "cpu", "cuda", "mps"]

DEMO_SOURCE = "demo"  # the tiny model trained on Python's documentation (resources/demo-model)
DEMO_RANDOM_SOURCE = "demo-random"  # a tiny OPT with random weights, built in code (for tests)
DEFAULT_SOURCE = "facebook/opt-125m"


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
    if err.get("type") == "finite_number":  # NaN or infinity (float("nan") from a command line, say)
        msg = "must be a finite number"
    return f"{where}: {msg}" if where else msg


class _Plain(BaseModel):
    # No NaN or infinity anywhere: such a value could not be saved in a session or compared sensibly.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_assignment=True, allow_inf_nan=False)

    @classmethod
    def parse(cls, **values):
        """Build from keyword values; a bad value raises `SettingsError` with one readable line."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise SettingsError(_first_error(exc)) from None

    def replace(self, **changes):
        return type(self).parse(**{**self.model_dump(), **changes})


class GenerationSettings(_Plain):
    """What the settings panel edits; every field has a `GenerationConfig` twin except `seed`."""

    max_new_tokens: int = Field(64, ge=1, le=100_000)
    do_sample: bool = False
    temperature: float = Field(1.0, ge=0.0, le=100.0)
    top_k: int = Field(50, ge=0, description="0 turns top-k filtering off")
    top_p: float = 1.0
    typical_p: float = 1.0
    min_p: float = Field(0.0, ge=0.0, lt=1.0, description="0 turns min-p filtering off")
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    no_repeat_ngram_size: int = Field(0, ge=0, le=64)
    seed: int | None = Field(None, ge=0, lt=2**63, description="None picks a fresh seed for each run")
    stop_strings: tuple[str, ...] = ()

    @field_validator("top_p", "typical_p")
    @classmethod
    def _unit_interval(cls, v: float) -> float:
        if not 0.0 < v <= 1.0:
            raise ValueError(f"must be in (0, 1], got {v}")
        return v

    @field_validator("stop_strings")
    @classmethod
    def _non_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(s == "" for s in v):
            raise ValueError("a stop string cannot be empty")
        return v

    @model_validator(mode="after")
    def _sampling_needs_temperature(self):
        if self.do_sample and self.temperature <= 0.0:
            raise ValueError(
                "temperature must be greater than 0 when sampling (use greedy decoding for deterministic output)"
            )
        return self

    # --- transformers' GenerationConfig -------------------------------------------------------

    def to_generation_config(self, *, eos_token_id: int | None = None, pad_token_id: int | None = None,
                             bos_token_id: int | None = None):
        from transformers import GenerationConfig

        kwargs: dict = dict(max_new_tokens=self.max_new_tokens, do_sample=self.do_sample)
        if self.do_sample:
            # Sampling-only flags are left out of greedy configs: transformers refuses to save them there.
            kwargs.update(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                          typical_p=self.typical_p, min_p=self.min_p or None)
        if self.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = self.repetition_penalty
        if self.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        if self.stop_strings:
            kwargs["stop_strings"] = list(self.stop_strings)
        if self.seed is not None:
            kwargs["seed"] = self.seed  # not a transformers field; GenerationConfig keeps and saves it
        for name, value in (("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id),
                            ("bos_token_id", bos_token_id)):
            if value is not None:
                kwargs[name] = value
        return GenerationConfig(**kwargs)

    @classmethod
    def from_generation_config(cls, gc) -> "GenerationSettings":
        d = cls()
        do_sample = bool(getattr(gc, "do_sample", False))

        def pick(name, default):
            value = getattr(gc, name, None)
            return default if value is None else value

        stop = pick("stop_strings", ())
        values = dict(
            max_new_tokens=pick("max_new_tokens", d.max_new_tokens),
            do_sample=do_sample,
            temperature=pick("temperature", d.temperature),
            top_k=pick("top_k", d.top_k),
            top_p=pick("top_p", d.top_p),
            typical_p=pick("typical_p", d.typical_p),
            min_p=pick("min_p", d.min_p),
            repetition_penalty=pick("repetition_penalty", d.repetition_penalty),
            no_repeat_ngram_size=pick("no_repeat_ngram_size", d.no_repeat_ngram_size),
            seed=getattr(gc, "seed", None),
            stop_strings=(stop,) if isinstance(stop, str) else tuple(stop),
        )
        return cls.parse(**values)

    def save_json(self, path: str | Path) -> None:
        """Write a `generation_config.json` that transformers (and this app) can read back."""
        path = Path(path)
        gc = self.to_generation_config()
        from ...atomic import write_text_atomic

        try:
            write_text_atomic(path, gc.to_json_string(use_diff=True))
        except OSError as exc:
            raise SettingsError(f"Could not write {path}: {exc.strerror or exc}") from None

    @classmethod
    def load_json(cls, path: str | Path) -> "GenerationSettings":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SettingsError(f"{path} is not a readable generation_config.json ({exc})") from None
        if not isinstance(data, dict):
            raise SettingsError(f"{path} is not a generation_config.json (expected a JSON object)")
        from transformers import GenerationConfig

        data.pop("transformers_version", None)
        try:
            gc = GenerationConfig(**data)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{path}: {exc}") from None
        try:
            return cls.from_generation_config(gc)
        except SettingsError as exc:
            raise SettingsError(f"{path}: {exc}") from None


class InspectSettings(_Plain):
    """What the engine captures besides the tokens. Defaults are the 'default inspection'."""

    hidden_stats: bool = True
    attention_stats: bool = True
    keep_residuals: bool = Field(
        True, description="residual rows (float32 up to opt-350m, else float16), needed for the logit lens")
    keep_attention_rows: bool = Field(False, description="full attention rows in float16 (memory grows with T^2)")
    rows_on_demand: bool = Field(
        False, description="send neither residual rows nor full attention rows with the events (an engine across "
                           "a network): the lens table and a head's attention rows are computed there when asked for")
    top_alternatives: int = Field(10, ge=1, le=100)


class LoadRequest(_Plain):
    source: str = DEFAULT_SOURCE
    dtype: DType = "float32"
    device: Device = "auto"
    revision: str | None = Field(None, description="a Hub branch, tag or commit; None takes main")
    # Big-model loading (accelerate): "spread" places layers over the GPUs, RAM and an offload folder.
    placement: Literal["one-device", "spread"] = "one-device"
    max_memory: dict[str, str] | None = Field(None, description='per device limit, e.g. {"0": "20GiB", "cpu": "30GiB"}')
    offload_folder: str | None = None

    @field_validator("source")
    @classmethod
    def _strip(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("the model source is empty: give a Hub id, a folder or 'demo'")
        return v


class HeadScale(_Plain):
    """Scale the output of one attention head: 0 ablates it, between 0 and 1 dampens, above 1 amplifies."""

    layer: int = Field(ge=0)
    head: int = Field(ge=0)
    scale: float = Field(0.0, ge=0.0, le=2.0)


class GenerationRequest(_Plain):
    prompt: str = ""
    # Token ids to start from instead of `prompt` (Continue appends to an earlier run without re-tokenising).
    prompt_ids: tuple[int, ...] | None = None
    settings: GenerationSettings = GenerationSettings()
    inspect: InspectSettings = InspectSettings()
    # Interventions: heads scaled at their out_proj input, and prompt positions hidden from attention.
    head_mask: tuple[HeadScale, ...] = ()
    hidden_positions: tuple[int, ...] = ()
