"""`opt-desktop-cli attribute` and `patch`: the JSON shapes, the readable tables and the one-line refusals."""

import json

import numpy as np
import pytest

from models import load_tokenizer, save_tiny_opt
from opt_desktop import cli
from opt_desktop.engine import LoadRequest
from opt_desktop.engine.analyses.attribution import attribute
from opt_desktop.engine.loading.loader import load_model
from opt_desktop.engine.analyses.patching import patch

PAIRS = [("The Eiffel Tower is in the city of", "The Colosseum is in the city of"),
         ("The cat sat on the mat and then", "The dog sat on the mat and then"),
         ("Paris is the capital of", "Rome is the capital of")]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    return str(save_tiny_opt(tmp_path_factory.mktemp("cli-opt"), "post", tokenizer))  # post-LN, project_in/out


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_model(LoadRequest(source=model_dir, device="cpu"))


@pytest.fixture(scope="module")
def same_length(tokenizer):
    for clean, corrupt in PAIRS:
        if len(tokenizer(clean)["input_ids"]) == len(tokenizer(corrupt)["input_ids"]):
            return clean, corrupt
    pytest.skip("no prompt pair of equal token length for this tokenizer")


def run(capsys, *args):
    rc = cli.main(list(args) + ["--device", "cpu"])
    out, err = capsys.readouterr()
    # transformers draws a "Loading weights" bar on stderr when a folder loads; the messages are the rest.
    err = "\n".join(line for line in err.splitlines() if not line.startswith("Loading weights"))
    return rc, out, err


def test_attribute_json(capsys, model_dir, loaded, tokenizer):
    prompt = "The weather today is"
    rc, out, err = run(capsys, "attribute", "--model", model_dir, "--prompt", prompt, "--steps", "8", "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert list(data) == ["tokens", "token_ids", "scores", "target", "target_id", "logprob", "method", "steps"]
    ids = tokenizer(prompt)["input_ids"]
    assert data["token_ids"] == ids and ids[0] == 2 and data["tokens"][0] == "</s>"
    assert len(data["tokens"]) == len(data["scores"]) == len(ids)
    assert data["method"] == "ig" and data["steps"] == 8
    expected = attribute(loaded, ids, method="ig", steps=8)  # the greedy next token by default
    assert data["target_id"] == expected.target_id
    assert data["logprob"] == pytest.approx(expected.logprob, abs=1e-5)
    np.testing.assert_allclose(data["scores"], expected.scores, atol=1e-5)

    # The greedy target named as text gives the same target; input x gradient has no steps.
    if tokenizer(data["target"], add_special_tokens=False)["input_ids"] != [data["target_id"]]:
        pytest.skip("this tokenizer does not encode the greedy piece back to its own id")
    rc, out, err = run(capsys, "attribute", "--model", model_dir, "--prompt", prompt, "--target", data["target"],
                       "--method", "ixg", "--json")
    ixg = json.loads(out)
    assert rc == 0 and ixg["target_id"] == data["target_id"] and ixg["method"] == "ixg" and ixg["steps"] is None
    np.testing.assert_allclose(ixg["scores"], attribute(loaded, ids, data["target_id"], method="ixg").scores,
                               atol=1e-5)


def test_attribute_table(capsys, model_dir):
    rc, out, err = run(capsys, "attribute", "--model", model_dir, "--prompt", "Hello there", "--steps", "4")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("target ") and "integrated gradients, 4 steps" in lines[0]
    assert "'</s>'" in out and lines[2].split() == ["pos", "token", "score"]


def test_patch_json(capsys, model_dir, loaded, tokenizer, same_length):
    clean, corrupt = same_length
    clean_ids, corrupt_ids = tokenizer(clean)["input_ids"], tokenizer(corrupt)["input_ids"]
    target = tokenizer.decode([5])  # "." in the real tokenizer: one token in any byte-level BPE
    target_id = tokenizer(target, add_special_tokens=False)["input_ids"]
    assert len(target_id) == 1
    rc, out, err = run(capsys, "patch", "--model", model_dir, "--clean", clean, "--corrupt", corrupt,
                       "--target", target, "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert list(data) == ["rows", "tokens", "clean_prob", "corrupt_prob", "prob", "heads"]
    L, H = loaded.info.n_layers, loaded.info.n_heads
    assert data["rows"] == ["embed"] + [str(i) for i in range(L)]
    assert data["tokens"][0] == "</s>" and len(data["tokens"]) == len(clean_ids)
    assert np.shape(data["prob"]) == (L + 1, len(clean_ids)) and np.shape(data["heads"]) == (L, H)
    expected = patch(loaded, clean_ids, corrupt_ids, target_id[0])
    assert data["clean_prob"] == pytest.approx(expected.clean_prob, rel=1e-5)
    assert data["corrupt_prob"] == pytest.approx(expected.corrupt_prob, rel=1e-5)
    np.testing.assert_allclose(data["prob"], expected.prob, rtol=1e-5)  # prob[r][t]: row r at position t
    np.testing.assert_allclose(data["heads"], expected.head_prob, rtol=1e-5)  # heads[l][h]

    rc, out, err = run(capsys, "patch", "--model", model_dir, "--clean", clean, "--corrupt", corrupt,
                       "--target", target)
    assert rc == 0, err
    assert "residual rows x positions" in out and "layers x heads" in out and "\n embed " in out


def test_refusals_are_one_line(capsys, model_dir, tokenizer):
    clean, short = "The cat sat on the mat", "The cat"
    n_clean, n_short = len(tokenizer(clean)["input_ids"]), len(tokenizer(short)["input_ids"])
    rc, out, err = run(capsys, "patch", "--model", model_dir, "--clean", clean, "--corrupt", short, "--target", "x")
    assert rc == 1 and out == ""
    assert err.strip().splitlines() == [f"error: The clean prompt is {n_clean} tokens long and the corrupted one "
                                        f"{n_short}: patching needs prompts of the same length."]
    rc, out, err = run(capsys, "attribute", "--model", model_dir, "--prompt", "Hi", "--target", " two words here")
    assert rc == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: The target ' two words here' is ")
    assert "not one" in lines[0] and "Traceback" not in err


def test_patch_says_when_the_runs_are_too_close_to_normalise(capsys, monkeypatch, model_dir, same_length, tokenizer):
    """Issue 23: p = 0.05095 clean and 0.05133 corrupted printed a map of 17.50 and -16.25."""
    import dataclasses

    from opt_desktop.engine.analyses import patching

    real = patching.patch

    def near_equal(*args, **kwargs):
        result = real(*args, **kwargs)
        prob = np.full_like(result.prob, 0.05133)
        prob[-1, -1], prob[-1, 0] = 0.04468, 0.057505
        return dataclasses.replace(result, clean_prob=0.05095, corrupt_prob=0.05133, prob=prob,
                                   head_prob=np.full_like(result.head_prob, 0.0512))

    monkeypatch.setattr(patching, "patch", near_equal)
    clean, corrupt = same_length
    rc, out, err = run(capsys, "patch", "--model", model_dir, "--clean", clean, "--corrupt", corrupt,
                       "--target", tokenizer.decode([5]))
    assert rc == 0, err
    (line,) = [x for x in out.splitlines() if "too close to normalise" in x]
    assert "0.05095 and 0.05133" in line
    assert "17.50" not in out and "-16.25" not in out
    assert "residual rows x positions, p − corrupted:" in out
    assert " -0.0067" in out and " 0.0062" in out and " -0.0001" in out  # the changes in p, to 4 decimals
