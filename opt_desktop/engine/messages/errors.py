"""Errors the front ends show as one sentence, never as a traceback."""

import traceback


class EngineError(Exception):
    """A failure with a message meant for the person at the keyboard."""


class SettingsError(EngineError, ValueError):
    """A generation or load setting is impossible."""


class ModelLoadError(EngineError):
    """A model source could not be loaded; the message names the source and the cause."""


class HubUnreachableError(ModelLoadError):
    """A Hub id is neither in the local cache nor reachable (offline mode, no network); front ends
    can offer a model that needs no network."""


class DownloadError(EngineError):
    """A download into the Hub cache failed; the message says why in words a person can act on."""


class PromptError(EngineError):
    """The prompt cannot be run (for example, it is longer than the model's context)."""


class NoModelError(EngineError):
    """Generation was asked for before any model was loaded."""


class JobCancelled(EngineError):
    """A job saw its stop event between two chunks of work and ended early; its job ends "cancelled"."""


def one_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its class name when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__


def describe_error(exc: BaseException, doing: str) -> tuple[str, str]:
    """(one calm line, traceback text) for an exception that ended `doing` ("Generation", "Loading").

    The line never names an exception class: an expected failure (EngineError) says what happened in
    its own words; anything else says that the log has the details.
    """
    details = "".join(traceback.format_exception(exc))
    if isinstance(exc, EngineError):
        return str(exc), details
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return f"{doing} ran out of memory: try a smaller model, a shorter prompt or fewer tokens.", details
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    hint = f" ({first})" if first else ""
    return f"{doing} failed because of an unexpected error{hint}; the log has the details.", details
