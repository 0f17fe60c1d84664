"""camex.daemon.loop: the epoll selector and how the loop keeps a core's deadline."""

import socket
import threading

from camex.daemon.loop import Deadline, EpollSelector, Loop


class Clock:
    """A clock the test moves; `fn` advances it as a costly ask would."""

    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def deadline(clock, cost, value=200.0):
    calls = []

    def fn():
        calls.append(clock.t)
        clock.t += cost
        return value
    return Deadline(fn, clock), calls


def test_cheap_deadline_is_asked_after_every_wake_up():
    clock = Clock()
    dl, calls = deadline(clock, cost=1e-6)
    dl.ask(clock())
    for _ in range(5):
        clock.t += 0.0001
        dl.refresh(clock())
    assert len(calls) == 6
    assert not dl.stale and dl.timeout(clock()) == 1.0  # the next timer is 100 s away


def test_costly_deadline_is_asked_at_most_every_slack_and_polls_wait_no_longer():
    clock = Clock()
    dl, calls = deadline(clock, cost=0.002)   # a server walking thousands of clients
    dl.ask(clock())
    assert abs(dl.slack - 20 * 0.002) < 1e-9
    for _ in range(10):                       # ten packets, 1 ms apart
        clock.t += 0.001
        dl.refresh(clock())
    assert len(calls) == 1 and dl.stale
    # The stale value is not trusted for long: the poll wakes by the slack.
    assert 0 < dl.timeout(clock()) <= dl.slack
    clock.t = dl.asked + dl.slack
    dl.refresh(clock())
    assert len(calls) == 2 and not dl.stale


def test_deadline_in_the_past_polls_without_waiting():
    clock = Clock()
    dl, _ = deadline(clock, cost=0.0, value=50.0)
    dl.ask(clock())
    assert dl.timeout(clock()) == 0.0


def test_epoll_selector_calls_back_per_descriptor_and_forgets_unregistered():
    sel = EpollSelector()
    a, b = socket.socketpair()
    try:
        sel.register(a, 1, "cb-a")
        b.send(b"x")
        assert [(sel.callbacks[fd]) for fd, _ in sel.poll(1.0)] == ["cb-a"]
        sel.unregister(a)
        assert sel.poll(0.0) == [] and sel.callbacks == {}
    finally:
        sel.close()
        a.close()
        b.close()


def test_loop_runs_the_timer_once_its_deadline_passed():
    loop = Loop(signals=False)
    fired = []

    def timer(now):
        fired.append(now)
        loop.stop()

    try:
        loop.run(lambda: 0.0, timer)      # a deadline long past: at once
    finally:
        loop.close()
    assert len(fired) == 1


def test_one_slow_ask_does_not_stall_timers_for_long():
    clock = Clock()
    dl, _ = deadline(clock, cost=0.5)   # preempted in the middle of the ask
    dl.ask(clock())
    assert dl.slack == Deadline.SLACK_MAX


def test_a_deadline_function_swapped_by_a_callback_is_the_one_asked():
    # The client swaps it when its socket comes and goes: the timer then due
    # is the new function's, found after the wake-up that swapped it.
    loop = Loop(signals=False)
    a, b = socket.socketpair()
    fired = []

    def readable():
        a.recv(16)
        loop.deadline_fn = lambda: 0.0       # now due at once

    def timer(now):
        fired.append(now)
        loop.stop()

    guard = threading.Timer(5.0, loop.stop)   # a loop that never asks it stops here
    try:
        loop.sel.register(a, 1, readable)
        b.send(b"x")
        guard.start()
        loop.run(lambda: float("inf"), timer)   # without the swap: never due
    finally:
        guard.cancel()
        loop.close()
        a.close()
        b.close()
    assert len(fired) == 1
