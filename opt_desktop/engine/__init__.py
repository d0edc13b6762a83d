"""The Qt-free inference engine. Importing this package does not import torch."""

from .errors import EngineError, ModelLoadError, NoModelError, PromptError, SettingsError
from .events import (
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
from .interventions_spec import format_head_mask, parse_head_mask, parse_positions
from .results import Attribution, Divergence, HeadImportance, Patching
from .service import EngineService
from .settings import (
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
