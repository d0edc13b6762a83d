"""Text from byte-level BPE ids: streamed without broken characters, and single tokens shown readably."""

from __future__ import annotations

from functools import lru_cache

from ..messages.errors import SettingsError


class IncrementalDecoder:
    """Turns generated ids into text deltas; a character split over several tokens comes out whole.

    Each step decodes a short window of the generated ids and emits what it adds to the text;
    while the window ends in an incomplete UTF-8 sequence (decoded as U+FFFD) nothing is emitted.
    The windowing gives the same text as decoding the whole list every time, in constant time.
    """

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the decode window
        self._read = 0  # ids up to here have been emitted

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        before = self._decode(self._ids[self._prefix:self._read])
        after = self._decode(self._ids[self._prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before):]
        return ""

    def flush(self) -> str:
        """Whatever is still held back at the end (an incomplete character stays as U+FFFD)."""
        before = self._decode(self._ids[self._prefix:self._read])
        after = self._decode(self._ids[self._prefix:])
        self._prefix = self._read = len(self._ids)
        return after[len(before):]


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    # GPT-2's reversible map from bytes to printable characters, inverted.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_piece(tokenizer, token_id: int) -> str:
    """One token as text; bytes that are not whole characters are shown as <0xF0> etc."""
    token = tokenizer.convert_ids_to_tokens(int(token_id))
    if token is None:
        return f"#{token_id}"
    if token in tokenizer.all_special_tokens:
        return token
    decoder = _byte_decoder()
    try:
        raw = bytes(decoder[c] for c in token)
    except KeyError:
        return token
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"<0x{b:02X}>" if b >= 0x80 else chr(b) for b in raw)


def prompt_ids(tokenizer, text: str, bos_token_id: int) -> list[int]:
    """A prompt's ids as the model reads them: always with OPT's leading `</s>`."""
    ids = list(tokenizer(text)["input_ids"])
    if not ids or ids[0] != bos_token_id:
        ids = [bos_token_id] + ids
    return ids


def one_token(tokenizer, text: str, what: str = "target") -> int:
    """The id of `text` when it is exactly one token, else SettingsError (one line)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
    if len(ids) != 1:
        count = "empty" if not ids else f"{len(ids)} tokens"
        raise SettingsError(f"The {what} {text!r} is {count} for this model's tokenizer, not one: give the "
                            "text of a single token (with its leading space, if it has one).")
    return int(ids[0])
