"""Descriptions of runs (opt_desktop/session/describe.py): the runs panel's names tell runs apart."""

import dataclasses

from fakes import fake_events
from opt_desktop.engine.messages.events import Finished, Started
from opt_desktop.session import RunTrace
from opt_desktop.session.describe import run_details, run_settings, run_summary, run_title


def run(n_gen=4, reason="length", **started) -> RunTrace:
    events = fake_events(n_prompt=5, n_gen=n_gen, n_layers=3, n_heads=4)
    events[0] = dataclasses.replace(events[0], **started)
    events[-1] = dataclasses.replace(events[-1], reason=reason)
    trace = RunTrace(events[0])
    for ev in events[1:]:
        trace.apply(ev)
    return trace


LONG_PROMPT = "Once upon a time, in a land far away, there lived a dragon who loved tea"


def test_titles_say_what_differs_between_runs():
    runs = {
        "plain": run(prompt=LONG_PROMPT),
        "other prompt": run(prompt="The capital of France is"),
        "sampled": run(prompt=LONG_PROMPT, settings={"do_sample": True}, seed=7),
        "other seed": run(prompt=LONG_PROMPT, settings={"do_sample": True}, seed=8),
        "head mask": run(prompt=LONG_PROMPT, head_mask=((3 - 1, 1, 0.0),)),
        "hidden": run(prompt=LONG_PROMPT, hidden_positions=(2, 3)),
    }
    titles = {name: run_title(i, t) for i, (name, t) in enumerate(runs.items())}
    bodies = {name: title.split(" · ", 1)[1] for name, title in titles.items()}  # without the run number
    assert len(set(bodies.values())) == len(bodies), bodies
    assert titles["plain"] == "#1 · “Once upon a time…” · greedy · 4 tokens"
    assert "“The capital of…”" in titles["other prompt"]
    assert "seed 7" in titles["sampled"] and "seed 8" in titles["other seed"]
    assert "mask 2:1" in titles["head mask"]  # layers and heads from 0, as --mask-heads reads it
    assert "hide 2–3" in titles["hidden"]
    assert all(len(t) <= 70 for t in titles.values())  # fits the runs panel; the tooltip has the rest


def test_titles_of_unfinished_stopped_failed_and_single_token_runs():
    assert run_title(0, run(n_gen=1)).endswith(" · 1 token")
    assert run_title(0, run(reason="cancelled")).endswith(" · 4 tokens, stopped")
    failed = run(reason="error")
    failed.finished = dataclasses.replace(failed.finished, message="Out of memory while generating.")
    assert run_title(0, failed).endswith(" · 4 tokens, failed")
    assert dict(run_details(0, failed))["result"].endswith("finished: error (Out of memory while generating.)")
    events = fake_events(n_prompt=5, n_gen=2)[:-1]  # still running: no Finished yet
    trace = RunTrace(events[0])
    for ev in events[1:]:
        trace.apply(ev)
    assert run_title(2, trace).endswith(" · 2 tokens …")


def test_details_hold_what_the_title_leaves_out():
    t = run(prompt=LONG_PROMPT, settings={"do_sample": True, "temperature": 0.7, "top_k": 50,
                                          "stop_strings": ["\n\n"]}, seed=7,
            head_mask=((0, 1, 0.0), (2, 3, 0.5)), hidden_positions=(2, 3))
    rows = dict(run_details(0, t))
    assert rows["prompt"] == repr(LONG_PROMPT)  # whole, where the title has its start
    assert rows["decoding"] == "sampling, temperature 0.7, top-k 50" and rows["seed"] == "7"
    assert rows["stop strings"] == repr("\n\n")
    assert rows["head mask"] == "0:1, 2:3 ×0.5"  # layers and heads from 0
    assert rows["hidden tokens"] == "2–3" and rows["origin"] == "a new run"
    assert rows["result"].startswith("4 tokens, ") and rows["result"].endswith("finished: length")
    assert [k for k, _ in run_details(0, t)][2:] == list(run_summary(t))  # the run details panel's rows


def test_settings_side_by_side_rows():
    t = run(prompt="x" * 100, head_mask=((1, 2, 0.0),), hidden_positions=(1, 2, 3))
    rows = run_settings(t)
    assert rows["head mask"] == "1:2" and rows["hidden from attention"] == "1–3"
    assert len(rows["prompt"]) <= 62 and rows["ended by"] == "length"
    assert "head mask changes" not in rows


def test_started_and_finished_are_what_the_fakes_build():
    """Guard for the helper above: it really replaced the events it meant to."""
    t = run(reason="eos", seed=5)
    assert isinstance(t.started, Started) and t.started.seed == 5
    assert isinstance(t.finished, Finished) and t.finished.reason == "eos"
