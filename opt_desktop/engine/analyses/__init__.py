"""Analyses of a finished run: attribution, activation patching, the exact lens table."""
