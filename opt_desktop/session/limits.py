"""Hard limits on what a session file may claim, checked before any claim sizes an allocation.

They are far above what any OPT model and any real sitting produce (OPT-175B: 96 layers, 96 heads,
hidden size 12,288, a context of 2,048 tokens), and low enough that no count in a file can ask for
more memory than the content behind it. docs/session-format.md lists them.
"""

from __future__ import annotations

# --- the archive -------------------------------------------------------------------------------
MAX_MEMBERS = 16  # a session holds two; a few more are tolerated (and ignored)
MAX_DIRECTORY_BYTES = 1 << 20  # the zip's central directory
# Deflate cannot shrink anything more than about 1032:1, so a member claiming more is forged (a zip bomb).
MAX_RATIO = 1100
# Bytes a file may hold beyond what its members and directory account for (headers vary a little).
SLACK_BYTES = 1 << 20
CHUNK_BYTES = 1 << 20  # what one read of a member decompresses at most

# --- session.json ------------------------------------------------------------------------------
MAX_JSON_BYTES = 256 << 20
MAX_JSON_DEPTH = 24  # the format nests 8 levels deep
MAX_JSON_INT_DIGITS = 20  # a 64-bit integer and its sign
# Indentation is whitespace, padding is whitespace: more of it than this (beyond the first MiB)
# is not a session's content. The app's own files are about a third whitespace.
MAX_WHITESPACE_RATIO = 3.0
# Values (one per comma, colon or bracket) per byte of text that is not whitespace: the app's own
# files have one value per ten bytes or so; tens of millions of empty objects in a few megabytes
# are not a session.
MIN_BYTES_PER_VALUE = 3.0

# --- arrays.safetensors ------------------------------------------------------------------------
MAX_ARRAYS_HEADER_BYTES = 16 << 20
MAX_ARRAYS_BYTES = 64 << 30
MAX_EXTRA_ARRAY_BYTES = 16 << 20  # arrays of names this version does not read (skipped, never kept)
MAX_ARRAY_DIMS = 6

# --- what a run may claim ----------------------------------------------------------------------
MAX_RUNS = 4096
MAX_POSITIONS = 32_768  # prompt and generated tokens of one run (OPT reads 2,048)
MAX_LAYERS = 256
MAX_HEADS = 256
MAX_HIDDEN = 65_536
MAX_FFN = 1 << 20
MAX_VOCAB = 1 << 20
MAX_PARAMS = 10**13
MAX_TOP = 100  # alternatives per position, as InspectSettings allows
MAX_LENS_TOP = 100
MAX_ANALYSES = 256  # per run
MAX_TEXT_CHARS = 1 << 22  # a prompt or a run's text
MAX_PIECE_CHARS = 4096  # one token shown alone (or what it added to the text)
MAX_NAME_CHARS = 4096  # labels, model sources, devices, paths, notices
MAX_NOTICES = 1024
MAX_PLACEMENT = 4096
MAX_MEMORY_BYTES = 1 << 50
