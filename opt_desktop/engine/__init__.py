"""The Qt-free inference engine. Importing this package does not import torch."""

from .messages.errors import EngineError, ModelLoadError, NoModelError, PromptError, SettingsError
from .messages.events import (
    Finished,
    HeadMaskChanged,
    LensResult,
    LoadProgress,
    ModelInfo,
    Notice,
    PromptScored,
    Started,
    StepStats,
    TokenGenerated,
)
from .messages.interventions_spec import format_head_mask, parse_head_mask, parse_positions
from .messages.results import Attribution, Divergence, HeadImportance, Patching
from .jobs.service import EngineService
from .messages.settings import (
    DEMO_RANDOM_SOURCE,
    DEMO_SOURCE,
    GenerationRequest,
    GenerationSettings,
    HeadScale,
    InspectSettings,
    LoadRequest,
)

__all__ = [
    "Attribution", "DEMO_RANDOM_SOURCE", "DEMO_SOURCE", "Divergence", "EngineError", "EngineService", "Finished",
    "GenerationRequest", "GenerationSettings", "HeadImportance", "HeadMaskChanged", "HeadScale",
    "InspectSettings", "LensResult", "LoadProgress", "LoadRequest", "ModelInfo", "ModelLoadError",
    "NoModelError", "Notice", "Patching", "PromptError", "PromptScored", "SettingsError", "Started", "StepStats",
    "TokenGenerated", "format_head_mask", "parse_head_mask", "parse_positions",
]
