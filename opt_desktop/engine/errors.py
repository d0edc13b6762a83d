"""Errors the front ends show as one sentence, never as a traceback."""


class EngineError(Exception):
    """A failure with a message meant for the person at the keyboard."""


class SettingsError(EngineError, ValueError):
    """A generation or load setting is impossible."""


class ModelLoadError(EngineError):
    """A model source could not be loaded; the message names the source and the cause."""


class PromptError(EngineError):
    """The prompt cannot be run (for example, it is longer than the model's context)."""


class NoModelError(EngineError):
    """Generation was asked for before any model was loaded."""


class JobCancelled(EngineError):
    """A job saw its stop event between two chunks of work and ended early; its job ends "cancelled"."""
