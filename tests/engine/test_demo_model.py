"""The shipped demo model (resources/demo-model) has learned something, on the weights as shipped.

Each figure is measured with plain forward passes of `OPTForCausalLM` loaded from the folder
(eager attention, `output_attentions` / `output_hidden_states`), not with the app's capture code;
one test checks the app's own sink statistic agrees on the same text. The thresholds are those of
issue 14; training/train_demo.py prints and records the same figures when it trains the model.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import run
from opt_desktop.engine import EngineService, GenerationRequest, GenerationSettings, LoadRequest
from opt_desktop.engine.loading.demo import demo_folder
from opt_desktop.engine.loading.loader import load_model
from opt_desktop.session import RunTrace

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for training/
from training import corpus, figures  # noqa: E402

FOLDER = demo_folder()
PROMPT = "The return value of"


@pytest.fixture(scope="module")
def record():
    return json.loads((FOLDER / "training.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def model():
    from transformers import OPTForCausalLM

    m = OPTForCausalLM.from_pretrained(FOLDER, dtype=torch.float32, attn_implementation="eager")
    return m.eval()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(FOLDER)


@pytest.fixture(scope="module")
def held_out_ids(tokenizer):
    return tokenizer((FOLDER / "heldout.txt").read_text(encoding="utf-8"), add_special_tokens=False).input_ids


@pytest.fixture(scope="module")
def passage(model, held_out_ids):
    """</s> and the start of the held-out text: natural text the model never trained on."""
    return torch.tensor([[2] + held_out_ids[: model.config.max_position_embeddings - 1]])


# --- the folder --------------------------------------------------------------------------------

def test_folder_is_a_small_float16_checkpoint_with_its_tokenizer(model, tokenizer):
    from safetensors import safe_open

    assert sum(p.stat().st_size for p in FOLDER.iterdir()) <= 10 * 2**20
    with safe_open(FOLDER / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    cfg = model.config
    assert cfg.model_type == "opt" and cfg.do_layer_norm_before and cfg.num_hidden_layers >= 2
    assert 4000 <= cfg.vocab_size <= 8192 and len(tokenizer) == cfg.vocab_size
    # OPT's special tokens, and its leading </s>.
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<s>", "<pad>", "</s>", "<unk>"]
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == cfg.bos_token_id == cfg.eos_token_id == 2
    ids = tokenizer(PROMPT).input_ids
    assert ids[0] == 2 and tokenizer.decode(ids[1:]) == PROMPT


def test_training_record_names_the_corpus(record):
    c = record["corpus"]
    assert c["python"].count(".") == 2 and c["bytes"] > 1_000_000 and len(c["sha256"]) == 64
    assert c["held_out_documents"] > 0 and record["training"]["seed"] is not None
    assert record["results"]["held_out_perplexity"] > 1


def test_the_app_loads_it_as_the_demo(tokenizer):
    loaded = load_model(LoadRequest(source="demo", device="cpu"))
    assert "tiny model trained on Python's documentation (not OPT weights)" in loaded.info.label
    assert not loaded.info.random_weights
    assert loaded.info.vocab_size == len(tokenizer) and loaded.tokenizer(PROMPT).input_ids == tokenizer(PROMPT).input_ids


# --- what it has learned -----------------------------------------------------------------------

def test_greedy_text_is_made_of_corpus_words(model, tokenizer):
    new = figures.greedy_ids(model, tokenizer, PROMPT, max_new_tokens=48)
    text = tokenizer.decode(new)
    assert len(new) >= 30, text
    vocabulary = set((FOLDER / "corpus-words.txt").read_text(encoding="utf-8").split())
    words = corpus.words(text)
    assert len(words) >= 10, text
    known = sum(w in vocabulary for w in words) / len(words)
    assert known >= 0.8, (known, text)
    assert figures.longest_run(new) <= 5, text


def test_held_out_perplexity_is_at_most_a_twentieth_of_the_vocabulary(model, held_out_ids):
    ppl = figures.held_out_perplexity(model, held_out_ids, model.config.max_position_embeddings)
    assert ppl <= model.config.vocab_size / 20, ppl


# Not reached by the shipped weights (issues 14 and 27 stay open on these two; training/README.md
# lists every try and its figures). strict: the day retrained weights pass, this fails and the
# marks must go.
@pytest.mark.xfail(strict=True, reason="no attention sink formed: the largest mean weight on position 0 over "
                                        "the held-out documents in layers 1-3 is 0.18, 0.07, 0.14")
def test_every_layer_above_the_first_has_an_attention_sink(model, held_out_ids):
    # [L, H]: mean weight on position 0 over every query of every window of the held-out documents
    sinks = figures.held_out_sink_weights(model, held_out_ids, model.config.max_position_embeddings)
    assert (sinks[1:].max(-1).values > 0.3).all(), sinks


def test_the_apps_sink_statistic_agrees(model, passage):
    """The engine's attn_sink on the same text (as a prompt) matches the plain forward pass."""
    svc = EngineService()
    try:
        svc.load(LoadRequest(source="demo", device="cpu")).result()
        prompt = passage[0, :200].tolist()
        events, _ = run(svc, GenerationRequest(prompt_ids=tuple(prompt), settings=GenerationSettings(max_new_tokens=1)))
    finally:
        svc.shutdown()
    trace = RunTrace(events[0])
    for e in events[1:]:
        trace.apply(e)
    ours = np.nanmean(trace.attention("sink")[:, :, 1:len(prompt)], axis=-1)
    reference = figures.sink_weights(model, torch.tensor([prompt])).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-4)


@pytest.mark.xfail(strict=True, reason="no induction head formed: median rank 818, 1856, 2591 for seeds 0, 1, 2; "
                                        "no head above layer 0 puts over 0.05 on the token after the earlier copy")
def test_induction_copies_a_repeated_random_sequence(model):
    for seed in range(3):
        assert figures.induction_median_rank(model, model.config.vocab_size, length=20, seed=seed) <= 3
        # ... and does it with an induction head. Ranks near 3 can come without one: a model that boosts
        # the token seen longest ago gets them on a sequence repeated back to back (training/README.md, r1).
        scores = figures.induction_scores(model, model.config.vocab_size, length=20, seed=seed)
        assert scores[1:].max() > 0.3, scores


def test_logit_lens_agreement_rises_to_the_last_row(model, passage):
    shares = figures.lens_agreement(model, passage)  # embed, layer 0 … L-1
    assert len(shares) == model.config.num_hidden_layers + 1
    assert shares[-1] == 1.0  # the last row's lens is the model's own logits
    assert all(a <= b for a, b in zip(shares, shares[1:])), shares
    assert shares[0] < 0.5, shares


def test_reference_figures_fail_on_random_weights(tokenizer):
    """The checks above can fail: an untrained model of the same shape misses every one."""
    from transformers import OPTForCausalLM

    config = OPTForCausalLM.config_class.from_pretrained(FOLDER)
    torch.manual_seed(0)
    untrained = OPTForCausalLM._from_config(config, attn_implementation="eager").eval()
    held = tokenizer((FOLDER / "heldout.txt").read_text(encoding="utf-8")[:4000], add_special_tokens=False).input_ids
    assert figures.held_out_perplexity(untrained, held, config.max_position_embeddings) > config.vocab_size / 20
    sinks = figures.held_out_sink_weights(untrained, held, config.max_position_embeddings)
    assert not (sinks[1:].max(-1).values > 0.3).all()
    assert figures.induction_median_rank(untrained, config.vocab_size) > 3
    assert figures.induction_scores(untrained, config.vocab_size)[1:].max() <= 0.3


# --- reproducibility ---------------------------------------------------------------------------

def test_the_corpus_is_rebuilt_identically(record):
    """Where the Python that trained the model runs the tests, the corpus code gives the same text."""
    if record["corpus"]["python"] != sys.version.split()[0]:
        pytest.skip(f"the demo was trained on Python {record['corpus']['python']}")
    docs = corpus.documents()
    assert corpus.describe(docs)["sha256"] == record["corpus"]["sha256"]
    held = "\n\n".join(d.text for d in docs if d.held_out)
    assert held == (FOLDER / "heldout.txt").read_text(encoding="utf-8")
    words = {w for d in docs if not d.held_out for w in corpus.words(d.text)}
    assert words == set((FOLDER / "corpus-words.txt").read_text(encoding="utf-8").split())
