"""Whether the Hugging Face Hub can be reached now, and why not, in words (no torch, no Qt)."""

from __future__ import annotations

import os
import threading

UNREACHABLE = "the Hugging Face Hub is unreachable"


def unreachable_reason() -> str:
    """Why the Hub is not being asked: offline mode (naming the variable that set it) or no answer."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            value = os.environ.get(name, "")
            if value.strip().upper() in ("1", "ON", "YES", "TRUE"):
                return f"offline mode is on ({name}={value})"
        return "offline mode is on"
    return UNREACHABLE


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hub answers within `timeout` seconds. False at once with HF_HUB_OFFLINE=1.

    The request runs on a daemon thread and is abandoned at the deadline, so a slow DNS lookup
    (which ignores socket timeouts) cannot hold the caller longer than `timeout`.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    answer: list[bool] = []

    def probe() -> None:
        from huggingface_hub.utils import get_session

        try:
            get_session().head(constants.ENDPOINT, timeout=timeout, follow_redirects=False)
            answer.append(True)  # any HTTP answer, even an error status, means the Hub is there
        except Exception:  # offline mode, DNS, refused, timeout, proxy: all mean "not now"
            answer.append(False)

    # A daemon thread, not an executor: a probe stuck in DNS is abandoned, where an executor's thread
    # would hold up the interpreter's exit until it ended.
    thread = threading.Thread(target=probe, name="opt-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])
