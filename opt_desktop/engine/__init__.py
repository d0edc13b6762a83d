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
from .service import EngineService
from .settings import (
    DEMO_SOURCE,
    GenerationRequest,
    GenerationSettings,
    HeadScale,
    InspectSettings,
    LoadRequest,
)

__all__ = [
    "DEMO_SOURCE", "EngineError", "EngineService", "Finished", "GenerationRequest", "GenerationSettings", "HeadMaskChanged", "HeadScale",
    "InspectSettings", "LensResult", "LoadProgress", "LoadRequest", "ModelInfo", "ModelLoadError",
    "NoModelError", "Notice", "PromptError", "PromptScored", "SettingsError", "Started", "StepStats",
    "TokenGenerated",
]
