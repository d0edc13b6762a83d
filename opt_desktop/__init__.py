"""OPT Desktop: run Meta's OPT language models and watch their internals while they write."""

__version__ = "0.1.0"
