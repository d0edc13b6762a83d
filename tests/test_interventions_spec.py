"""Head masks and hidden positions as text and plain data: parsing, checks and summaries (no torch)."""

import json
import subprocess
import sys

import pytest

from opt_desktop.engine import HeadScale, SettingsError
from opt_desktop.engine.messages.interventions_spec import (
    check_head_mask,
    check_hidden_positions,
    format_head_mask,
    normalize_head_mask,
    parse_head_mask,
    parse_positions,
)


def _triples(mask):
    return [(m.layer, m.head, m.scale) for m in mask]


def test_heads_layers_and_scales():
    assert _triples(parse_head_mask("3:0,3:5, 7:*", n_layers=12, n_heads=6)) == [
        (3, 0, 0.0), (3, 5, 0.0), (7, 0, 0.0), (7, 1, 0.0), (7, 2, 0.0), (7, 3, 0.0), (7, 4, 0.0), (7, 5, 0.0)]
    assert _triples(parse_head_mask("*:4=0.5", n_layers=3, n_heads=8)) == [(0, 4, 0.5), (1, 4, 0.5), (2, 4, 0.5)]
    assert _triples(parse_head_mask("2:1=1.5")) == [(2, 1, 1.5)]  # no counts needed without *
    assert parse_head_mask("  ") == ()


def test_later_items_override_earlier_ones():
    assert _triples(parse_head_mask("1:*,1:2=0.5", n_heads=3)) == [(1, 0, 0.0), (1, 1, 0.0), (1, 2, 0.5)]
    assert _triples(normalize_head_mask([(2, 0, 1.0), (0, 1, 0.0), (2, 0, 0.25)])) == [(0, 1, 0.0), (2, 0, 0.25)]


@pytest.mark.parametrize("text, words", [
    ("3", "layer:head"),
    ("3:x", "layer:head"),
    ("3:0=abc", "number"),
    ("3:0=2.5", "outside 0-2"),
    ("7:*", "load a model"),
    ("12:0", "layer 12 does not exist"),
    ("0:4", "head 4 does not exist"),
])
def test_bad_masks_are_one_line_errors(text, words):
    n_layers, n_heads = (None, None) if "*" in text else (12, 4)
    with pytest.raises(SettingsError) as err:
        parse_head_mask(text, n_layers=n_layers, n_heads=n_heads)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_json_file(tmp_path):
    path = tmp_path / "mask.json"
    path.write_text(json.dumps([{"layer": 3, "head": 0, "scale": 0}, {"layer": 1, "head": 2, "scale": 1.5}]))
    assert _triples(parse_head_mask(str(path))) == [(1, 2, 1.5), (3, 0, 0.0)]
    path.write_text(json.dumps([{"layer": 3, "head": 0, "scale": 7}]))
    with pytest.raises(SettingsError, match="entry 0"):
        parse_head_mask(str(path))
    path.write_text("{not json")
    with pytest.raises(SettingsError, match="not a readable"):
        parse_head_mask(str(path))
    with pytest.raises(SettingsError, match="no such"):
        parse_head_mask(str(tmp_path / "missing.json"))


def test_positions():
    assert parse_positions("1,2,5-7") == (1, 2, 5, 6, 7)
    assert parse_positions(" 9 , 3-4,3 ") == (3, 4, 9)
    assert parse_positions("") == ()
    for bad in ("a", "3-1", "1-2-3", "-2"):
        with pytest.raises(SettingsError):
            parse_positions(bad)


def test_model_checks():
    mask = (HeadScale(layer=2, head=3),)
    check_head_mask(mask, n_layers=3, n_heads=4)
    with pytest.raises(SettingsError, match=r"^Head 3:12 does not exist: opt-125m has 12 heads per layer \(0-11\)\.$"):
        check_head_mask((HeadScale(layer=3, head=12),), 12, 12, "opt-125m")
    with pytest.raises(SettingsError, match=r"^Layer 12 does not exist: opt-125m has 12 layers \(0-11\)\.$"):
        check_head_mask((HeadScale(layer=12, head=0),), 12, 12, "opt-125m")
    assert check_hidden_positions([4, 2, 4], n_prompt=5) == (2, 4)
    with pytest.raises(SettingsError, match="Position 0"):
        check_hidden_positions([0], n_prompt=5)
    with pytest.raises(SettingsError, match="outside the prompt of 5 tokens"):
        check_hidden_positions([5], n_prompt=5)


def test_format_round_trips_through_the_parser():
    text = "3:0, 3:5=0.5, 7:*"
    mask = parse_head_mask(text, n_layers=12, n_heads=6)
    summary = format_head_mask(mask, n_layers=12, n_heads=6)
    assert summary == "3:0, 3:5 ×0.5, 7:*"
    assert parse_head_mask(summary.replace(" ×", "="), n_layers=12, n_heads=6) == mask
    every = parse_head_mask("*:1=1.5", n_layers=3, n_heads=4)
    assert format_head_mask(every, n_layers=3, n_heads=4) == "*:1 ×1.5"
    assert format_head_mask(every) == "0:1 ×1.5, 1:1 ×1.5, 2:1 ×1.5"  # without counts, every head is listed
    assert format_head_mask([(1, 0, 0.0)]) == "1:0"  # event tuples are accepted too
    assert format_head_mask(()) == ""


def test_parsing_does_not_import_torch():
    code = "import sys; import opt_desktop.engine.messages.interventions_spec, opt_desktop.engine.messages.results; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_head_named_twice_is_refused_naming_it(tmp_path):
    """Issue 13: with "1:0,1:0=0.5" the last one silently won."""
    with pytest.raises(SettingsError) as err:
        parse_head_mask("1:0,2:3,1:0=0.5", n_layers=4, n_heads=4)
    assert str(err.value) == "Head 1:0 is named twice ('1:0' and '1:0=0.5'): name each head once."
    # A wildcard is not a name: a later item still refines what it gave a head.
    assert _triples(parse_head_mask("1:*,1:2=0.5", n_heads=3)) == [(1, 0, 0.0), (1, 1, 0.0), (1, 2, 0.5)]
    path = tmp_path / "mask.json"
    path.write_text(json.dumps([{"layer": 1, "head": 0}, {"layer": 1, "head": 0, "scale": 0.5}]))
    with pytest.raises(SettingsError, match="entries 0 and 1 both name head 1:0"):
        parse_head_mask(str(path))
