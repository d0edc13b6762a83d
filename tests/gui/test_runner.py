"""The one way the window runs an analysis (gui/analysis/runner.py), on a plain asyncio loop and a fake
controller: only the job started last reaches the view, progress and partial results go one way, and
every end (a result, a stop, an error) reaches the person the same way."""

import asyncio

import pytest

from opt_desktop.engine.jobs.job import JobEnd, JobProgress
from opt_desktop.gui.analysis.runner import Runner


class FakeJob:
    def __init__(self, request, origin, on_events, loop):
        self.request, self.origin, self.on_events = request, origin, on_events
        self.stopped = False
        self.ended = loop.create_future()

    def stop(self):
        self.stopped = True

    def end(self, end: JobEnd):
        self.ended.set_result(end)


class FakeController:
    """submit / wait / spawn, as gui/controller.py offers them."""

    def __init__(self, loop):
        self.loop = loop
        self.jobs: list[FakeJob] = []

    def submit(self, request, *, origin=None, on_events=None):
        job = FakeJob(request, origin, on_events, self.loop)
        self.jobs.append(job)
        return job

    async def wait(self, job):
        return await asyncio.shield(job.ended)

    def spawn(self, coro):
        return self.loop.create_task(coro)


class View:
    def __init__(self):
        self.calls = []

    def set_running(self, running):
        self.calls.append(("running", running))

    def set_progress(self, done, total):
        self.calls.append(("progress", done, total))

    def set_message(self, text):
        self.calls.append(("message", text))


@pytest.fixture
def setup():
    loop = asyncio.new_event_loop()
    c, view, seen = FakeController(loop), View(), []
    runner = Runner(c, view, on_done=lambda result, origin: seen.append(("done", result, origin)),
                    on_partial=lambda event, origin: seen.append(("partial", event, origin)),
                    on_end=lambda end, origin: seen.append(("end", end.reason, origin)),
                    report=lambda line, details: seen.append(("report", line, details)))
    settle = lambda: loop.run_until_complete(asyncio.sleep(0))  # noqa: E731
    yield c, view, seen, runner, settle
    loop.close()


def test_a_result_reaches_the_view_with_its_origin(setup):
    c, view, seen, runner, settle = setup
    runner.start("request", origin="run 1")
    settle()
    assert runner.running and runner.origin == "run 1" and view.calls == [("running", True)]
    c.jobs[0].on_events([JobProgress(1, 4), "a partial map", JobProgress(2, 4)])
    c.jobs[0].end(JobEnd("done", result="the map"))
    settle()
    assert view.calls == [("running", True), ("progress", 2, 4), ("running", False)]
    assert seen == [("partial", "a partial map", "run 1"), ("done", "the map", "run 1"), ("end", "done", "run 1")]
    assert not runner.running


def test_starting_again_stops_and_disconnects_the_previous_job(setup):
    c, view, seen, runner, settle = setup
    runner.start("first", origin=1)
    settle()
    runner.start("second", origin=2)
    first, second = c.jobs
    assert first.stopped and not second.stopped
    first.on_events([JobProgress(3, 3), "stale"])  # late events and a late end of the first job
    first.end(JobEnd("done", result="stale result"))
    settle()
    assert ("progress", 3, 3) not in view.calls and seen == []
    second.end(JobEnd("done", result="fresh"))
    settle()
    assert seen == [("done", "fresh", 2), ("end", "done", 2)]


def test_an_error_is_said_in_the_view_and_reported_with_its_details(setup):
    c, view, seen, runner, settle = setup
    runner.start("request", origin="run")
    c.jobs[0].end(JobEnd("error", "Attribution failed: out of memory.", "Traceback …"))
    settle()
    assert view.calls[-1] == ("message", "Attribution failed: out of memory.")
    assert seen == [("report", "Attribution failed: out of memory.", "Traceback …"), ("end", "error", "run")]


def test_stop_lets_the_partial_result_arrive_and_a_plain_stop_is_said(setup):
    c, view, seen, runner, settle = setup
    runner.start("heads", origin="run")
    runner.stop()
    assert c.jobs[0].stopped and runner.running  # still connected: its end will come
    c.jobs[0].end(JobEnd("cancelled", result="half the heads"))
    settle()
    assert seen[0] == ("done", "half the heads", "run")
    runner.start("attribution", origin="run")
    runner.stop()
    c.jobs[1].end(JobEnd("cancelled", "Stopped."))
    settle()
    assert view.calls[-1] == ("message", "Stopped.") and seen[-1] == ("end", "cancelled", "run")


def test_cancel_leaves_the_view_idle_and_hears_nothing_more(setup):
    c, view, seen, runner, settle = setup
    runner.start("request", origin="run")
    runner.cancel()
    assert c.jobs[0].stopped and not runner.running and view.calls[-1] == ("running", False)
    c.jobs[0].end(JobEnd("error", "too late"))
    settle()
    assert seen == [] and ("message", "too late") not in view.calls
    runner.cancel()  # nothing running: nothing happens
    assert view.calls.count(("running", False)) == 1
