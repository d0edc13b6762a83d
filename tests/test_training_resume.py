"""training/train_demo.py spreads a run over sittings: N steps straight give the very same weights,
loss curve and next batch as N/2 steps, a kill, and --resume for the rest."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for training/
from training import train_demo  # noqa: E402

COMMON = ["--vocab", "64", "--hidden", "32", "--layers", "2", "--heads", "2", "--context", "32", "--warmup", "2",
          "--log-every", "2", "--checkpoint-every", "3", "--measure-every", "0"]
TINY = COMMON + ["--phase", "steps=4,context=16,batch=4,copy=4,period=3-6", "--phase", "steps=4,batch=3,copy=1,period=4-8"]


def run(folder: Path, *extra: str):
    args = train_demo.parse_args(TINY + ["--checkpoint-dir", str(folder), *extra])
    torch.manual_seed(args.seed)
    model = train_demo.build_model(args, 64)
    g = torch.Generator().manual_seed(args.seed)
    stream = torch.randint(4, 64, (500,), generator=torch.Generator().manual_seed(1))
    batches = train_demo.Batches(stream, args.phases, 64, g)
    ckpt = train_demo.Checkpoints(folder)
    state = train_demo.train(model, batches, args, ckpt, g, log=lambda m: None)
    return model, state, batches


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise equality needs one reduction order
    yield
    torch.set_num_threads(threads)


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    straight, s_state, s_batches = run(tmp_path / "straight")
    _, first, _ = run(tmp_path / "split", "--stop-at", "5")  # past a checkpoint (3) and a phase change (4)
    assert first["step"] == 5 and first["sittings"][-1]["ended"] == "stopped"
    resumed, r_state, r_batches = run(tmp_path / "split", "--resume")

    assert r_state["curve"] == s_state["curve"] and len(s_state["curve"]) == 4
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(s_batches(8)[0], r_batches(8)[0])  # the data order goes on identically too
    sittings = r_state["sittings"]
    assert [(s["start_step"], s["end_step"], s["ended"]) for s in sittings] == [(0, 5, "stopped"), (5, 8, "finished")]
    assert all(s["threads"] == 1 and s["host"] and s["cpu_seconds"] >= 0 for s in sittings)


def test_a_kill_between_checkpoints_resumes_from_the_last_one(tmp_path):
    """A sitting killed at step 5 has checkpointed only step 3: the resume redoes 4 and 5 the same way."""
    straight, s_state, _ = run(tmp_path / "straight")
    folder = tmp_path / "killed"
    run(folder, "--stop-at", "5")
    (folder / "ckpt-000005.pt").unlink()  # as if killed after step 5, before its checkpoint
    resumed, r_state, _ = run(folder, "--resume")
    assert r_state["curve"] == s_state["curve"]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert r_state["sittings"][-1]["start_step"] == 3


def test_resume_refuses_other_settings_and_a_fresh_start_refuses_old_checkpoints(tmp_path):
    run(tmp_path / "run", "--stop-at", "3")
    with pytest.raises(SystemExit, match="other settings"):
        run(tmp_path / "run", "--resume", "--lr", "1e-2")
    with pytest.raises(SystemExit, match="already holds checkpoints"):
        run(tmp_path / "run")


def test_a_replanned_run_equals_the_final_plan_run_straight(tmp_path):
    """--replan: a run cut short and given a new last phase is the same run as the final plan from the start."""
    first = ["--phase", "steps=6,context=16,batch=4,copy=4,period=3-6,lr=3e-3,schedule=constant"]
    final = ["--phase", "steps=4,context=16,batch=4,copy=4,period=3-6,lr=3e-3,schedule=constant",
             "--phase", "steps=4,batch=3,copy=1,period=4-8,schedule=cosine"]

    def go(folder, plan, *extra):
        args = train_demo.parse_args(COMMON + plan + ["--checkpoint-dir", str(folder), *extra])
        torch.manual_seed(args.seed)
        model = train_demo.build_model(args, 64)
        g = torch.Generator().manual_seed(args.seed)
        stream = torch.randint(4, 64, (500,), generator=torch.Generator().manual_seed(1))
        state = train_demo.train(model, train_demo.Batches(stream, args.phases, 64, g), args,
                                 train_demo.Checkpoints(folder), g, log=lambda m: None)
        return model, state

    straight, s_state = go(tmp_path / "straight", final)
    go(tmp_path / "replanned", first, "--stop-at", "4")
    with pytest.raises(SystemExit, match="other settings"):
        go(tmp_path / "replanned", final, "--resume")  # a new plan needs --replan
    replanned, r_state = go(tmp_path / "replanned", final, "--resume", "--replan")
    assert r_state["curve"] == s_state["curve"]
    for a, b in zip(straight.state_dict().values(), replanned.state_dict().values()):
        assert torch.equal(a, b)
    assert [p["from_step"] for p in r_state["plans"]] == [0, 4]
    with pytest.raises(SystemExit, match="would change"):  # what already ran cannot be replanned
        go(tmp_path / "replanned", ["--phase", "steps=9,context=16,batch=4,copy=2,period=3-6"], "--resume", "--replan")


def test_init_from_starts_at_a_saved_models_weights_and_counts_its_record(tmp_path):
    """--init-from: the run's first weights are the saved model's (not a fresh draw), and the export's
    record carries that model's own training, so its time is counted too."""
    import json

    saved_args = train_demo.parse_args(TINY + ["--seed", "7"])
    torch.manual_seed(7)
    saved = train_demo.build_model(saved_args, 64)
    folder = tmp_path / "saved"
    saved.save_pretrained(folder)
    (folder / "training.json").write_text(json.dumps({"training": {"steps": 9, "cpu_seconds": 120, "sittings": []},
                                                      "results": {"held_out_perplexity": 50.0}}), encoding="utf-8")
    args = train_demo.parse_args(TINY + ["--checkpoint-dir", str(tmp_path / "run"), "--init-from", str(folder)])
    torch.manual_seed(args.seed)
    model = train_demo.build_model(args, 64)
    assert not all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), model.state_dict().values()))
    train_demo.init_weights(model, folder, train_demo.Checkpoints(args.checkpoint_dir))
    for (name, a), b in zip(saved.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    record = train_demo.started_from(args)["started_from"]
    assert record["training"] == {"steps": 9, "cpu_seconds": 120} and record["results"]["held_out_perplexity"] == 50.0
    assert train_demo.run_settings(args)["init_from"] == str(folder)  # a resume under another start is refused
