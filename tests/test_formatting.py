"""The shared, Qt-free formatting helpers (opt_desktop/formatting.py)."""

import math

import pytest

from opt_desktop.formatting import (
    FULL_SHADE_BITS,
    FULL_SHADE_OPACITY,
    format_bytes,
    format_count,
    position_ranges,
    surprise_opacity,
)


@pytest.mark.parametrize("n, text", [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (50_000, "48.8 KiB"), (146 * 2**20, "146 MiB"),
    (int(2.5 * 2**30), "2.5 GiB"), (120 * 2**30, "120 GiB"), (3 * 2**40, "3.0 TiB"), (None, "–"),
])
def test_format_bytes(n, text):
    assert format_bytes(n) == text


def test_format_count():
    assert [format_count(n) for n in (999, 12_345, 1_315_758_080, 125_239_296, 6_700_000)] == [
        "999", "12.3K", "1.3B", "125M", "6.7M"]


def test_surprise_opacity_is_linear_in_bits_up_to_the_full_shade():
    assert surprise_opacity(0.0) == 0.0  # a certain token is not shaded
    half = -(FULL_SHADE_BITS / 2) * math.log(2)
    assert surprise_opacity(half) == pytest.approx(FULL_SHADE_OPACITY / 2)
    assert surprise_opacity(-FULL_SHADE_BITS * math.log(2)) == pytest.approx(FULL_SHADE_OPACITY)
    assert surprise_opacity(-50.0) == FULL_SHADE_OPACITY  # rarer still: no darker
    assert surprise_opacity(float("nan")) == 0.0  # position 0: nothing predicted it


def test_position_ranges():
    assert position_ranges([7, 2, 3, 4, 3]) == "2–4, 7"
    assert position_ranges([]) == ""
