"""One numbering everywhere: the GUI's head "L{l}H{h}" is head h of `model.model.decoder.layers[l]`,
as in the engine, the CLI, the exports and the session files; hidden-state row "layer i" is the
output of `decoder.layers[i]`. Checked against a real tiny OPT and a plain forward pass of it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from models import save_tiny_opt
from opt_desktop.engine import EngineService, GenerationRequest, GenerationSettings, HeadScale, InspectSettings, LoadRequest
from opt_desktop.gui.widgets.attention_view import AttentionView
from opt_desktop.gui.widgets.hidden_view import HiddenView
from opt_desktop.gui.widgets.inspector import Inspector
from opt_desktop.session import RunTrace
from opt_desktop.session.file import load_session, save_session
from opt_desktop.session.requests import rerun_requests
from opt_desktop.session.session import Session

PROMPT = "Hello, my dog is cute and"
# The tiny model has 3 layers of 4 heads. Neither number is 0 and they differ, so counting from 1
# (or swapping layer and head) anywhere names another head.
LAYER, HEAD = 2, 1


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = save_tiny_opt(tmp_path_factory.mktemp("opt-pre"), "pre")
    svc = EngineService()
    svc.load(LoadRequest(source=str(folder), device="cpu")).result()
    yield svc
    svc.shutdown()
    assert svc.join(5.0)


def generate(engine, **kw) -> RunTrace:
    request = GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=4),
                                inspect=InspectSettings(keep_attention_rows=True), **kw)
    events = []
    engine.generate(request, events.append).result()
    trace = RunTrace(events[0])
    for ev in events[1:]:
        trace.apply(ev)
    return trace


def model_of(engine):
    return engine.call(lambda loaded: loaded).result().model


def forward(model, ids):
    """transformers' own eager forward pass: logits, attentions (L, H, T, T), layer outputs (L, T, D)."""
    layers = model.model.decoder.layers
    outputs = {}
    hooks = [layer.register_forward_hook(lambda m, a, out, i=i: outputs.__setitem__(i, out[0] if isinstance(out, tuple) else out))
             for i, layer in enumerate(layers)]
    implementation = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_attentions=True, use_cache=False)
    finally:
        model.set_attn_implementation(implementation)
        for h in hooks:
            h.remove()
    attn = torch.stack([a[0] for a in out.attentions]).double().numpy()
    rows = torch.stack([outputs[i][0] for i in range(len(layers))]).double().numpy()
    return out.logits[0].double(), attn, rows


@pytest.fixture(scope="module")
def traced(engine):
    trace = generate(engine)
    return (trace, *forward(model_of(engine), trace.token_ids))


def test_grid_cell_l_h_is_head_h_of_decoder_layer_l(qtbot, traced):
    trace, _logits, attn, _rows = traced
    view = AttentionView()
    qtbot.addWidget(view)
    view.set_trace(trace)
    pos = trace.n_prompt - 1
    view.set_position(pos)

    w = attn[:, :, pos, : pos + 1]
    entropy = -(w * np.log(np.where(w > 0, w, 1.0))).sum(-1)  # (L, H): reference entropy per head
    np.testing.assert_allclose(view.grid.data(), entropy, rtol=1e-4, atol=1e-5)
    read_out = view.grid.describe(LAYER, HEAD)
    assert read_out.startswith(f"L{LAYER}H{HEAD} (layer {LAYER}, head {HEAD}): ")
    assert float(read_out.rsplit(": ", 1)[1]) == pytest.approx(entropy[LAYER, HEAD], rel=1e-3)
    axis = view.grid.plot.getPlotItem()
    assert axis.getAxis("left").tickStrings([0, LAYER], 1, 1) == ["0", str(LAYER)]
    assert axis.getAxis("bottom").tickStrings([0, HEAD], 1, 1) == ["0", str(HEAD)]

    view.grid.cell_clicked.emit(LAYER, HEAD)  # a click on that cell shows the head's matrix
    assert view.matrix_layer_head() == (LAYER, HEAD)
    assert (view.layer_spin.text(), view.head_spin.text()) == (f"layer {LAYER}", f"head {HEAD}")
    assert f"L{LAYER}H{HEAD}" in view.matrix.plot.getPlotItem().titleLabel.text
    shown = view.matrix.data()
    fed = trace.length - 1  # the last generated token is never fed to the model
    lower = np.tril_indices(fed)
    np.testing.assert_allclose(shown[:fed, :fed][lower], attn[LAYER, HEAD][:fed, :fed][lower], atol=2e-3)  # float16
    menu = [a.text() for a in view.mask_menu(("head", LAYER, HEAD)).actions()]
    assert menu[:3] == [f"Ablate head L{LAYER}H{HEAD}", f"Ablate layer {LAYER}", f"Ablate head {HEAD} in every layer"]


def test_masking_head_l_h_in_the_grid_masks_head_h_of_decoder_layer_l(qtbot, engine, traced):
    trace, logits, _attn, _rows = traced
    view = AttentionView()
    qtbot.addWidget(view)
    view.set_trace(trace)
    view.set_position(trace.n_prompt - 1)
    [ablate] = [a for a in view.mask_menu(("head", LAYER, HEAD)).actions()
                if a.text() == f"Ablate head L{LAYER}H{HEAD}"]
    ablate.trigger()
    mask = view.head_mask()
    assert mask == (HeadScale(layer=LAYER, head=HEAD, scale=0.0),)
    assert view.mask_bar.summary.text() == f"1 head masked: {LAYER}:{HEAD}"  # what --mask-heads reads

    masked = generate(engine, head_mask=mask)
    # The independent reference: decoder.layers[LAYER] with head HEAD's out_proj input columns zeroed.
    model = model_of(engine)
    ref = copy.deepcopy(model)
    d = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        ref.model.decoder.layers[LAYER].self_attn.out_proj.weight[:, HEAD * d:(HEAD + 1) * d] = 0
    P = masked.n_prompt
    ids = torch.tensor(masked.token_ids[1:P])

    def prompt_logprobs(lg):
        return torch.log_softmax(lg[: P - 1], -1).gather(-1, ids[:, None])[:, 0].numpy()

    ref_logits, _, _ = forward(ref, masked.token_ids[:P])
    np.testing.assert_allclose(masked.logprob[1:P], prompt_logprobs(ref_logits), atol=1e-4)
    assert not np.allclose(masked.logprob[1:P], prompt_logprobs(logits), atol=1e-4)  # the mask matters


def test_hidden_state_rows_are_embed_then_each_layers_output(qtbot, traced):
    trace, _logits, _attn, rows = traced
    view = HiddenView()
    qtbot.addWidget(view)
    view.set_trace(trace)
    axis = view.heatmap.plot.getPlotItem().getAxis("left")
    L = trace.n_layers
    assert axis.tickStrings(list(range(L + 1)), 1, 1) == ["emb"] + [str(i) for i in range(L)]
    col = trace.n_prompt - 1
    norms = np.linalg.norm(rows[:, col], axis=-1)  # (L,): the output of decoder.layers[i] at `col`
    for i in range(L):
        read_out = view.heatmap.describe(i + 1, col)
        assert read_out.startswith(f"layer {i}, token {col} ")
        assert float(read_out.rsplit(": ", 1)[1]) == pytest.approx(norms[i], rel=1e-3)
    assert view.heatmap.describe(0, col).startswith(f"embed, token {col} ")


def test_a_saved_head_mask_opens_as_the_same_head(qtbot, engine, tmp_path):
    """Session files always counted from 0: a head masked, saved and reopened is the same head."""
    masked = generate(engine, head_mask=(HeadScale(layer=LAYER, head=HEAD, scale=0.0),))
    path = tmp_path / "masked.optsession"
    save_session(Session([masked]), path)
    [loaded] = load_session(path).runs
    assert tuple(loaded.started.head_mask) == ((LAYER, HEAD, 0.0),)
    _load, request = rerun_requests(loaded)
    assert request.head_mask == (HeadScale(layer=LAYER, head=HEAD, scale=0.0),)

    inspector = Inspector()
    qtbot.addWidget(inspector)
    inspector.set_trace(loaded)
    assert f"Heads masked: {LAYER}:{HEAD}" in inspector.interventions.text()
    inspector.set_head_mask(loaded.started.head_mask)  # as re-run and "use these settings" do
    assert inspector.attention.head_mask() == request.head_mask
    inspector.attention.set_position(loaded.n_prompt - 1)
    assert inspector.attention.mask_overlay.cells() == {(LAYER, HEAD): 0.0}  # the cell the grid names L2H1


def test_outlier_runs_name_layers_from_0():
    from opt_desktop.gui.widgets.hidden_view import outlier_summary

    # Rows: embed, layer 0, layer 1, layer 2, layer 3.
    assert outlier_summary(np.array([5, 5, 5, 7, 9])) == "dim 5: embed–1; dim 7: layer 2; dim 9: layer 3"
    assert outlier_summary(np.array([4, 8, 8, -1, 2])) == "dim 4: embed; dim 8: layer 0–1; dim 2: layer 3"
