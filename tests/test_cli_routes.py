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
