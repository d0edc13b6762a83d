"""EventPump on a fake clock and a fake loop: a job's events reach the GUI thread in order, none lost,
at most once per DELIVERY_INTERVAL_S however fast they come, and the first after a quiet spell at once."""

import types

import pytest

from opt_desktop.gui import controller
from opt_desktop.gui.controller import DELIVERY_INTERVAL_S, EventPump


class FakeLoop:
    """What EventPump asks of an event loop, on a clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0  # a monotonic clock starts anywhere; the pump has delivered nothing yet
        self._timers: list[tuple[float, int, object]] = []  # (when, order, callback)
        self._order = 0

    def monotonic(self) -> float:
        return self.now

    def call_soon_threadsafe(self, callback) -> None:
        self.call_later(0.0, callback)

    def call_later(self, delay: float, callback) -> None:
        self._order += 1
        self._timers.append((self.now + delay, self._order, callback))

    def advance(self, seconds: float) -> None:
        """Move the clock on, running each callback when its time comes."""
        end = self.now + seconds
        while True:
            due = sorted(t for t in self._timers if t[0] <= end)
            if not due:
                break
            when, order, callback = due[0]
            self._timers.remove(due[0])
            self.now = max(self.now, when)
            callback()
        self.now = end


@pytest.fixture
def fake(monkeypatch):
    loop = FakeLoop()
    monkeypatch.setattr(controller, "time", types.SimpleNamespace(monotonic=loop.monotonic))
    deliveries: list[tuple[float, list]] = []
    pump = EventPump(loop, lambda events: deliveries.append((loop.now, list(events))))
    return loop, pump, deliveries


def test_a_fast_stream_is_delivered_at_most_every_interval_in_order(fake):
    loop, pump, deliveries = fake
    for i in range(1000):  # one event a millisecond for a second: a model far faster than 30 Hz
        pump.put(i)
        loop.advance(0.001)
    loop.advance(1.0)
    assert [e for _, events in deliveries for e in events] == list(range(1000))
    times = [t for t, _ in deliveries]
    assert all(b - a >= DELIVERY_INTERVAL_S - 1e-9 for a, b in zip(times, times[1:]))
    assert len(deliveries) <= 1.0 / DELIVERY_INTERVAL_S + 2


def test_the_first_event_after_a_quiet_spell_is_delivered_at_once(fake):
    loop, pump, deliveries = fake
    pump.put("z")
    loop.advance(5.0)
    start = loop.now
    pump.put("a")
    loop.advance(0.0)
    assert deliveries[-1] == (start, ["a"])
    pump.put("b")  # within the interval: waits for it, never longer
    loop.advance(0.0)
    assert len(deliveries) == 2
    loop.advance(DELIVERY_INTERVAL_S)
    assert deliveries[-1] == (pytest.approx(start + DELIVERY_INTERVAL_S), ["b"])


def test_a_slow_stream_is_delivered_event_by_event(fake):
    loop, pump, deliveries = fake
    for i in range(5):  # slower than the interval: nothing to coalesce, nothing held back
        pump.put(i)
        loop.advance(0.1)
    assert [events for _, events in deliveries] == [[0], [1], [2], [3], [4]]


def test_flush_delivers_now_and_close_stops_deliveries(fake):
    loop, pump, deliveries = fake
    pump.put(1)
    loop.advance(0.0)
    pump.put(2)
    pump.put(3)
    pump.flush()  # the job ended: what arrived is delivered before its end is handled
    assert [events for _, events in deliveries] == [[1], [2, 3]]
    pump.close()
    pump.put(4)
    loop.advance(1.0)
    assert [events for _, events in deliveries] == [[1], [2, 3]]
