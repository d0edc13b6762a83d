"""What a load hands to everything that runs a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..messages.events import ModelInfo


@dataclass
class LoadedModel:
    model: Any  # OPTForCausalLM, eval mode, eager attention
    tokenizer: Any  # a fast tokenizer
    info: ModelInfo
    device: torch.device
