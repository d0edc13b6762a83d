"""Generation settings: validation with readable messages, and transformers' generation_config.json."""

import json

import pytest
from transformers import GenerationConfig

from opt_desktop.engine import GenerationSettings, HeadScale, LoadRequest, SettingsError


@pytest.mark.parametrize("values, message", [
    (dict(do_sample=True, temperature=0.0), "temperature must be greater than 0 when sampling"),
    (dict(top_p=0.0), "top_p: must be in (0, 1], got 0.0"),
    (dict(top_p=1.2), "top_p: must be in (0, 1], got 1.2"),
    (dict(typical_p=-1), "typical_p: must be in (0, 1]"),
    (dict(top_k=-1), "top_k: Input should be greater than or equal to 0"),
    (dict(max_new_tokens=0), "max_new_tokens: Input should be greater than or equal to 1"),
    (dict(repetition_penalty=0), "repetition_penalty: Input should be greater than 0"),
    (dict(min_p=1.0), "min_p: Input should be less than 1"),
    (dict(no_repeat_ngram_size=-2), "no_repeat_ngram_size"),
    (dict(seed=-1), "seed"),
    (dict(stop_strings=("",)), "a stop string cannot be empty"),
    (dict(temprature=1.0), "temprature: Extra inputs are not permitted"),
])
def test_impossible_settings_are_refused(values, message):
    with pytest.raises(SettingsError) as info:
        GenerationSettings.parse(**values)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_temperature_zero_is_fine_for_greedy():
    assert GenerationSettings.parse(do_sample=False, temperature=0.0).temperature == 0.0


def test_generation_config_round_trip(tmp_path):
    s = GenerationSettings(max_new_tokens=33, do_sample=True, temperature=0.7, top_k=20, top_p=0.9, typical_p=0.95,
                           min_p=0.05, repetition_penalty=1.2, no_repeat_ngram_size=3, seed=42,
                           stop_strings=("\n\n", "END"))
    s.save_json(tmp_path / "generation_config.json")
    gc = GenerationConfig.from_pretrained(tmp_path)  # transformers itself reads the file
    assert gc.temperature == 0.7 and gc.top_k == 20 and gc.min_p == 0.05 and gc.stop_strings == ["\n\n", "END"]
    assert GenerationSettings.load_json(tmp_path / "generation_config.json") == s


def test_greedy_config_is_valid_for_transformers(tmp_path):
    s = GenerationSettings(max_new_tokens=5, repetition_penalty=1.3)
    s.save_json(tmp_path / "generation_config.json")
    gc = GenerationConfig.from_pretrained(tmp_path)
    gc.validate(strict=True)
    assert GenerationSettings.load_json(tmp_path / "generation_config.json") == s


def test_reads_a_models_own_generation_config(tmp_path):
    (tmp_path / "g.json").write_text(json.dumps({"_from_model_config": True, "bos_token_id": 2, "eos_token_id": 2,
                                                 "pad_token_id": 1, "transformers_version": "4.27.0.dev0"}))
    assert GenerationSettings.load_json(tmp_path / "g.json") == GenerationSettings()


@pytest.mark.parametrize("content, message", [
    ("{oops", "is not a readable generation_config.json"),
    ("[1, 2]", "expected a JSON object"),
    ('{"do_sample": true, "temperature": 0}', "temperature must be greater than 0"),
    ('{"top_p": 3}', "top_p: must be in (0, 1]"),
])
def test_bad_generation_config_files(tmp_path, content, message):
    path = tmp_path / "generation_config.json"
    path.write_text(content)
    with pytest.raises(SettingsError, match=None) as info:
        GenerationSettings.load_json(path)
    assert message in str(info.value)


def test_empty_model_source():
    with pytest.raises(SettingsError, match="the model source is empty"):
        LoadRequest.parse(source="  ")


@pytest.mark.parametrize("field", ["temperature", "top_p", "typical_p", "min_p", "repetition_penalty"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused_in_words(field, value):
    """Issue 13: `--temperature nan` said "should be less than or equal to 100"."""
    with pytest.raises(SettingsError) as err:
        GenerationSettings.parse(**{field: value})
    assert str(err.value) == f"{field}: must be a finite number"
    with pytest.raises(SettingsError, match="scale: must be a finite number"):
        HeadScale.parse(layer=0, head=0, scale=value)
