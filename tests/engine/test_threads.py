"""The engine's CPU threads: a fixed count is really what torch computes with on the worker, and
"auto" follows a (fake) load signal and the (fake) speed of each count, between decode steps.

No timings are asserted: the machine's speed is simulated by a clock that each step advances by
the time a model of the machine says that step takes with the count in force."""

import threading

import pytest
import torch

from opt_desktop.engine import EngineService, GenerationRequest, GenerationSettings, LoadRequest
from opt_desktop.engine.messages.errors import SettingsError
from opt_desktop.engine.messages.threads import ThreadsRequest, ThreadsState, parse_threads
from opt_desktop.engine.jobs.job import JobEnd
from opt_desktop.engine.process.engine_process import EngineProcess
from opt_desktop.engine.process.process_messages import JobEnded, Submit
from opt_desktop.engine.running.threads import ThreadTuner, prepare_environment, worker_tuner
from test_engine_process import roundtrip


class FakeLoad:
    def __init__(self, n_cores: int, others: float = 0.0):
        self.n_cores = n_cores
        self.value = others

    def others(self) -> float:
        return self.value


class Machine:
    """A simulated machine: `step_ms(n)` is how long a decode step takes with n threads."""

    def __init__(self, cores: int, step_ms, others: float = 0.0):
        self.load = FakeLoad(cores, others)
        self.step_ms = step_ms
        self.now = 0.0
        self.applied: list[int] = []
        self.tuner = ThreadTuner("auto", load=self.load, apply=self.apply, clock=lambda: self.now, most=cores)

    def apply(self, n):
        if n is not None:
            self.applied.append(n)
        return n if n is not None else (self.applied[-1] if self.applied else self.load.n_cores)

    def run(self, steps: int, at: dict | None = None) -> list[int]:
        """One generation of `steps` tokens; the thread count in force at each decode step.
        `at`: {step: what happens on the machine before that step}."""
        self.tuner.start_job()
        self.tuner.step()  # after the first token (the prefill)
        used = []
        for i in range(steps):
            if at and i in at:
                at[i]()
            n = self.tuner.threads
            used.append(n)
            self.now += self.step_ms(n) / 1000
            self.tuner.step()
        return used


def test_thread_settings_parse_and_refuse_nonsense():
    assert parse_threads("auto") == parse_threads(" Auto ") == "auto"
    assert parse_threads("4") == parse_threads(4) == 4
    for bad in (0, -1, "0", "abc", "1.5", 1.5, True, "", 10**6):
        with pytest.raises(SettingsError, match="threads must be 'auto' or a whole number"):
            parse_threads(bad)
    with pytest.raises(SettingsError):
        ThreadsRequest(0)
    assert ThreadsRequest("3").threads == 3


def test_auto_starts_with_the_cores_other_programs_leave_free():
    for others, expected in ((0.0, 4), (0.3, 4), (1.0, 3), (2.0, 2), (3.0, 1), (4.0, 1)):
        m = Machine(4, lambda n: 10.0, others)
        m.tuner.start_job()
        assert m.tuner.threads == expected, others


def test_auto_gives_way_when_a_busy_program_starts_and_takes_the_core_back_when_it_ends():
    # With 2 cores, 2 threads are best on an idle machine; 1 is best beside a busy process.
    m = Machine(2, lambda n: {1: 16.0, 2: 10.0}[n] if m.load.value < 0.5 else {1: 18.0, 2: 120.0}[n])

    def busy(value):
        return lambda: setattr(m.load, "value", value)

    used = m.run(200, at={20: busy(1.0), 120: busy(0.0)})
    assert used[:20].count(2) >= 18
    assert used[20:120].count(2) <= 6  # it gave way at its next reading of the load, within half a second
    assert 2 not in used[30:120]  # and never tried 2 threads while the load left no room for them
    assert used[-1] == 2 and used[140:].count(2) >= 55  # it took the core back once the busy process ended
    # A run that starts beside a busy process starts with 1 thread.
    m.load.value = 1.0
    assert m.run(3)[0] == 1


def test_auto_finds_the_fastest_count_where_fewer_threads_are_faster():
    # A tiny model (the demo) on 4 idle cores: synchronising 4 threads costs more than they gain.
    m = Machine(4, lambda n: {1: 3.0, 2: 2.0, 3: 2.6, 4: 3.5}[n])
    used = m.run(200)
    assert used[0] == 4 and used[-1] == 2
    assert used[-100:].count(2) >= 90  # it settles, trying a neighbour now and then
    # The next run under the same load starts where this one ended up.
    assert m.run(5)[0] == 2


def test_a_trial_that_is_much_slower_ends_after_one_step():
    m = Machine(2, lambda n: {1: 10.0, 2: 100.0}[n])  # the load reads idle, but 2 threads are far slower
    used = m.run(300)
    trials = [i for i in range(1, len(used)) if used[i] == 2 and used[i - 1] == 1]
    assert trials  # it does try (the load said there was room)
    for i in trials:
        assert used[i:i + 3].count(2) == 1  # one step, then back
    assert used.count(2) < 0.1 * len(used)


def test_a_fixed_count_never_changes():
    m = Machine(4, lambda n: {1: 3.0, 2: 2.0, 3: 2.6, 4: 3.5}[n], others=3.0)
    m.tuner.set(3)
    used = m.run(100)
    assert set(used) == {3} and set(m.applied) == {3}
    assert m.tuner.summary() == "3 threads for 100 steps (3)"


def test_a_new_setting_takes_effect_at_the_next_step():
    m = Machine(4, lambda n: 5.0)
    m.tuner.start_job()
    m.tuner.step()
    m.now += 0.005
    other = threading.Thread(target=m.tuner.set, args=(1,))  # from another thread, as the window's reader
    other.start()
    other.join()
    m.tuner.step()
    assert m.tuner.threads == 1 and m.tuner.setting == 1
    m.tuner.set("auto")
    m.tuner.step()
    assert m.tuner.threads == 4


def test_prepare_environment_shortens_llvms_spin_to_gnus_but_keeps_what_the_person_set():
    env = {}
    prepare_environment(env)
    assert "GOMP_SPINCOUNT" not in env  # GNU's default (~3 ms) decodes fastest on an idle machine
    assert int(env["KMP_BLOCKTIME"]) <= 3  # LLVM's and Intel's 200 ms would hold a core between tokens
    for mine in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"KMP_BLOCKTIME": "50"}):
        env = dict(mine)
        prepare_environment(env)
        assert {k: env[k] for k in mine} == mine and ("KMP_BLOCKTIME" in env) == ("KMP_BLOCKTIME" in mine)


def test_the_worker_computes_with_the_count_it_is_given(checkpoint):
    engine = EngineService()
    try:
        engine.load(LoadRequest(source=str(checkpoint), device="cpu")).result(timeout=120)
        state = engine.submit(ThreadsRequest(1)).future.result(timeout=30)
        assert state == ThreadsState(setting=1, threads=1, most=state.most)
        assert engine.call(lambda _: torch.get_num_threads()).result() == 1
        seen = []  # torch's count on the worker while each token is made

        def emit(event):
            if type(event).__name__ == "TokenGenerated":
                seen.append(torch.get_num_threads())

        request = GenerationRequest(prompt="Hello", settings=GenerationSettings(max_new_tokens=5))
        engine.generate(request, emit).result(timeout=60)
        assert seen == [1] * 5
        if state.most > 1:
            assert engine.submit(ThreadsRequest(2)).future.result(timeout=30).threads == 2
            assert engine.call(lambda _: torch.get_num_threads()).result() == 2
    finally:
        engine.shutdown()


def test_a_setting_sent_during_a_run_applies_between_its_steps(checkpoint):
    engine = EngineService()
    try:
        engine.load(LoadRequest(source=str(checkpoint), device="cpu")).result(timeout=120)
        engine.submit(ThreadsRequest(2)).future.result(timeout=30)
        seen, sent = [], []

        def emit(event):
            if type(event).__name__ == "TokenGenerated":
                seen.append(torch.get_num_threads())
                if event.index == 3:
                    sent.append(engine.submit(ThreadsRequest(1)))

        request = GenerationRequest(prompt="Hello", settings=GenerationSettings(max_new_tokens=10))
        engine.generate(request, emit).result(timeout=60)
        assert sent[0].future.result(timeout=5).threads == 1
        assert seen == [2] * 4 + [1] * 6  # from the step after it arrived
    finally:
        engine.shutdown()


def test_the_setting_crosses_to_the_engine_process():
    assert roundtrip(Submit(1, ThreadsRequest(3))).request == ThreadsRequest(3)
    assert roundtrip(JobEnded(1, JobEnd("done", result=ThreadsState("auto", 2, 4)))).end.result == \
        ThreadsState("auto", 2, 4)
    process = EngineProcess()
    try:
        state = process.submit(ThreadsRequest(1)).future.result(timeout=120)
        assert (state.setting, state.threads) == (1, 1)  # torch's own count, read in the engine process
        assert process.submit(ThreadsRequest("auto")).future.result(timeout=60).setting == "auto"
    finally:
        process.shutdown()


def test_threads_are_set_on_an_engine_worker_only():
    with pytest.raises(RuntimeError):
        worker_tuner()  # this test's thread is no engine's worker


def test_the_load_signal_counts_other_programs_on_our_cores_but_not_niced_ones_or_ours(monkeypatch):
    from collections import namedtuple

    from opt_desktop.engine.running import cpu_load

    Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")
    clock = {"wall": 100.0, "own": 5.0}
    counters = {0: [0.0] * 10, 1: [0.0] * 10, 2: [0.0] * 10}  # CPU 2 is not ours

    monkeypatch.setattr(cpu_load, "usable_cores", lambda: [0, 1])
    monkeypatch.setattr(cpu_load.os, "cpu_count", lambda: 3)
    monkeypatch.setattr(cpu_load.psutil, "cpu_times", lambda percpu=False: [Times(*counters[i]) for i in range(3)])
    monkeypatch.setattr(cpu_load.time, "monotonic", lambda: clock["wall"])
    monkeypatch.setattr(cpu_load.time, "process_time", lambda: clock["own"])
    monkeypatch.setattr(cpu_load.os, "getpriority", lambda *a: 0)
    load = cpu_load.CpuLoad()
    assert load.n_cores == 2

    def spend(cpu, field, seconds):
        counters[cpu][Times._fields.index(field)] += seconds

    # One second: a busy program on CPU 0 (user), this engine on CPU 1 (user, its own time),
    # a niced program and a program on CPU 2 (neither counts), and a little kernel time.
    clock["wall"] += 1.0
    spend(0, "user", 0.9)
    spend(0, "system", 0.1)
    spend(1, "user", 0.8)
    clock["own"] += 0.8
    spend(1, "nice", 0.2)
    spend(2, "user", 1.0)
    assert load.others() == pytest.approx(1.0)
    clock["wall"] += 0.1  # too short a window to judge: the last reading stands
    spend(0, "user", 0.1)
    assert load.others() == pytest.approx(1.0)
    clock["wall"] += 0.9  # the busy program ended; 0.1 s of it was in the short window
    spend(1, "user", 0.9)
    clock["own"] += 0.9
    assert load.others() == pytest.approx(0.1)
