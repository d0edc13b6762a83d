"""`opt-desktop-cli routes`: its JSON is the definition (checked against routes_reference.py on both
families, with a head mask), and its table names the strongest routes to the last token."""

import json

import numpy as np
import pytest

from models import load_tokenizer
from opt_desktop import cli
from opt_desktop.engine import LoadRequest
from opt_desktop.engine.loading.loader import load_model
from routes_reference import reference_routes, save_biased_opt

PROMPT = "The cat sat on the mat, and the cat"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module", params=["pre", "post"])
def model_dir(request, tmp_path_factory, tokenizer):
    return str(save_biased_opt(tmp_path_factory.mktemp(f"cli-routes-{request.param}"), request.param, tokenizer))


def run(capsys, *args):
    rc = cli.main(list(args) + ["--device", "cpu"])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("mask", [None, "1:0,2:3=0.5"])
def test_routes_json_is_the_definition(capsys, model_dir, tokenizer, mask):
    args = ["routes", "--model", model_dir, "--prompt", PROMPT, "--json"] + (["--mask-heads", mask] if mask else [])
    rc, out, err = run(capsys, *args)
    assert rc == 0, err
    data = json.loads(out)
    assert list(data) == ["tokens", "attn", "attn_residual", "mlp", "mlp_residual"]
    ids = tokenizer(PROMPT)["input_ids"]
    assert data["tokens"] == ids
    model = load_model(LoadRequest(source=model_dir, device="cpu")).model
    cfg = model.config
    scales = None
    if mask:
        scales = np.ones((cfg.num_hidden_layers, len(ids), cfg.num_attention_heads))
        scales[1, :, 0], scales[2, :, 3] = 0.0, 0.5
    want = reference_routes(model, ids, scales)
    for name, expected in want.items():
        np.testing.assert_allclose(np.asarray(data[name]), expected, rtol=1e-3, atol=2e-6, err_msg=name)


def test_routes_table(capsys, model_dir, tokenizer):
    rc, out, err = run(capsys, "routes", "--model", model_dir, "--prompt", PROMPT)
    assert rc == 0, err
    lines = out.splitlines()
    ids = tokenizer(PROMPT)["input_ids"]
    assert lines[0].startswith(f"routes into position {len(ids) - 1} {tokenizer.decode(ids[-1:])!r}")
    weights = [float(line.split()[0]) for line in lines[2:-1]]
    assert weights and weights == sorted(weights, reverse=True) and all(0 < w <= 1 for w in weights)
    assert lines[-1].startswith("input tokens by the share of its information")


def test_routes_json_past_the_memory_bound_is_one_clear_line(capsys, model_dir, monkeypatch):
    """Every part of a long prompt would not fit: the command says how large it would be and the
    longest prompt that fits, on one line, and prints nothing on stdout (the table still works)."""
    from opt_desktop.engine.analyses import routes as routes_module

    monkeypatch.setattr(routes_module, "DENSE_BYTES", 4096)  # this tiny model's 3 × 4 heads: 9 positions fit
    rc, out, err = run(capsys, "routes", "--model", model_dir, "--prompt", PROMPT, "--json")
    assert rc == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Every part of the routes of")
    assert "more than the 4.0 KiB they may" in lines[0] and "the longest sequence that fits is 9 tokens" in lines[0]
    rc, out, err = run(capsys, "routes", "--model", model_dir, "--prompt", PROMPT)
    assert rc == 0 and out.startswith("routes into position")
