"""The event loop shared by both roles: selector, clock, signals, control
socket, pid file and process hardening.

One thread, one selector. The cores (camex.legacy, camex.v2, camex.tunnel) decide everything; the
daemons (camex.daemon.client, camex.daemon.server) only move bytes between
them and the kernel. Signals become events: SIGINT/SIGTERM stop, SIGHUP
reloads (server).
"""

from __future__ import annotations

import os
import resource
import select
import selectors
import signal
import socket
import time

from .control import ControlServer
from ..base.log import LOG
from ..io.libc import function as _libc

# A readiness event that comes less than this long after the previous one
# on the same descriptor is part of a burst (drained in batches); a later
# one is a lone packet, handled with one read and sent at once.
BURST_GAP = 0.0002
# A burst's flushes ask the core whether the TUN's TSO should switch (a
# BULK session came or went) at most this often: the answer is a few
# Python calls, and a steady TCP stream flushes after every frame. Late by
# this much, a super-packet is cut in Python or the kernel cuts one more.
TSO_CHECK_EVERY = 0.05
RESOLVE_RETRY = 5.0
PR_SET_DUMPABLE = 4


class StartupError(RuntimeError):
    """A problem that stops the daemon before it runs, with a clear message."""


def harden_process() -> None:
    """No core dumps for a process that holds keys."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    try:
        _prctl(PR_SET_DUMPABLE, 0)
    except (OSError, AttributeError):
        pass


class HeapTrim:
    """Give the heap's free pages back to the system once the daemon idles.

    A burst leaves the C heap with free pages among live allocations (GRO
    and TUN reads of 64 KiB, batches): glibc returns only the free top of
    the heap by itself, malloc_trim(0) the pages in between too (1.0-1.1
    MiB of a v2 daemon's resident memory after a minute of iperf3; the
    peak, VmHWM, is what it was). Called on a wake-up that found nothing
    to do, at most every `every` seconds and only after traffic, so an
    idle daemon never calls it and a busy one (whose polls never come
    back empty) does not either."""

    def __init__(self, every: float = 10.0):
        self.every = every
        self.next = 0.0
        self.dirty = True     # start-up's garbage too
        self.also: list = []  # () -> None: buffers of the daemon's own to give back too
        try:
            self._trim = _libc("malloc_trim", "L")
        except (OSError, AttributeError):   # not glibc
            self._trim = None

    def now(self) -> None:
        """Trim at once (after a large piece of work whose garbage is known
        to be free now, such as a big state-file save)."""
        if self._trim is not None:
            self._trim(0)

    def idle(self, now: float) -> None:
        if self.dirty and now >= self.next:
            if self._trim is not None:
                self._trim(0)
            for fn in self.also:
                fn()
            self.dirty = False
            self.next = now + self.every


def _prctl(option: int, arg: int) -> int:
    """libc's prctl(option, arg, 0, 0, 0).

    Through cffi's C backend where `cryptography` has already loaded it
    (every daemon with a passphrase: 56 KiB more resident for this call)
    rather than ctypes, whose import and libc handle stay resident for the
    daemon's lifetime (0.35-0.6 MiB). ctypes where that backend is not
    loaded: loading it only for this would cost 1.3 MiB (camex.io.libc)."""
    return _libc("prctl", "iLLLL")(option, arg, 0, 0, 0)


class PidFile:
    def __init__(self, path: str | None):
        self.path = path

    def __enter__(self):
        if self.path:
            try:
                with open(self.path) as f:
                    old = int(f.read().strip() or 0)
            except (OSError, ValueError):
                old = 0
            if old and old != os.getpid() and _alive(old):
                raise StartupError(f"--pid-file: {self.path} names a running process ({old})")
            # A stale pid file (its process is gone) is simply replaced.
            d = os.path.dirname(self.path)
            if d:
                os.makedirs(d, exist_ok=True)
            tmp = f"{self.path}.{os.getpid()}"
            with open(tmp, "w") as f:
                f.write(f"{os.getpid()}\n")
            os.replace(tmp, self.path)
        return self

    def __exit__(self, *exc):
        if self.path:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"camex" in f.read()
    except OSError:
        return True


class EpollSelector:
    """The part of selectors.EpollSelector the loop needs: read interest and
    one callback per file descriptor. selectors' own select() builds key
    tuples and masks per event in Python; on an idle tunnel every packet
    is one wake-up, and that work lies on the round trip (docs/FASTPATH.md,
    "Idle RTT and small packets"). The class name matches what
    bench/profile.py counts as "waiting"."""

    def __init__(self):
        self._ep = select.epoll()
        self.callbacks: dict = {}  # fd -> callable()
        self.maxevents = 1
        self.ep_poll = self._ep.poll  # (timeout, maxevents): the loop calls it directly

    def register(self, fileobj, events, data) -> None:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        mask = (select.EPOLLIN if events & selectors.EVENT_READ else 0) | (
            select.EPOLLOUT if events & selectors.EVENT_WRITE else 0)
        if fd in self.callbacks:
            # A descriptor closed without unregister left epoll by itself;
            # its number may be back for a new file.
            try:
                self._ep.unregister(fd)
            except OSError:
                pass
        self._ep.register(fd, mask)
        self.callbacks[fd] = data
        self.maxevents = len(self.callbacks)

    def unregister(self, fileobj) -> None:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        if self.callbacks.pop(fd, None) is None:
            raise KeyError(f"{fileobj!r} is not registered")
        try:
            self._ep.unregister(fd)
        except OSError:
            pass  # already closed
        self.maxevents = max(len(self.callbacks), 1)

    def poll(self, timeout: float):
        """[(fd, epoll events)] ready within `timeout` seconds."""
        return self._ep.poll(timeout, self.maxevents)

    def close(self) -> None:
        self._ep.close()
        self.callbacks.clear()


class Deadline:
    """The next timer of a core, as the loop keeps it between wake-ups.

    Asked again after every wake-up while that is cheap, which it is for
    every core today (the v2 server keeps its peers' timers in a heap:
    ~0.4 us with 10,000 clients, where walking them cost ~1.5 ms). A guard
    for a core whose ask is costly, as that walk was: asked after every
    packet, it would cost more than the packets. So once an ask costs more than
    CHEAP, the loop asks at most every `slack` seconds (SLACK, or 20 times
    the cost: at most 5 % of the time; never more than SLACK_MAX), polls no
    longer than that meanwhile, and a timer may fire up to `slack` late
    (camex's timers are seconds).
    """

    CHEAP = 50e-6
    SLACK = 0.01
    SLACK_MAX = 0.1

    def __init__(self, fn, clock):
        self.fn = fn
        self.clock = clock
        self.value = 0.0
        self.asked = -1e18
        self.slack = 0.0
        self.stale = False

    def ask(self, now: float) -> None:
        value = self.fn()
        self.asked_at(now, value, self.clock() - now)

    def asked_at(self, now: float, value: float, cost: float) -> None:
        """An ask at `now` returned `value` and took `cost` seconds."""
        self.value = value
        # (Capped: one ask that was preempted must not stall timers for long.)
        self.slack = 0.0 if cost < self.CHEAP else min(max(self.SLACK, 20 * cost),
                                                       self.SLACK_MAX)
        self.asked = now
        self.stale = False

    def refresh(self, now: float) -> None:
        """After a wake-up: ask again, or mark the value stale until `slack`."""
        if now - self.asked >= self.slack:
            self.ask(now)
        else:
            self.stale = True

    def timeout(self, now: float) -> float:
        """How long the next poll may sleep (0 to 1 s)."""
        t = self.value - now
        if self.stale:
            t = min(t, self.asked + self.slack - now)
        return 1.0 if t > 1.0 else (t if t > 0.0 else 0.0)


class Loop:
    """Selector, clock and signals shared by both roles."""

    def __init__(self, signals: bool = True):
        self.sel = EpollSelector()
        self.signals = signals
        self.trim = HeapTrim()
        self.stopping = False
        self.reload_requested = False
        # () -> the next deadline; None: run()'s deadline_fn. A daemon may
        # swap it between wake-ups (the client: its core's while connected).
        self.deadline_fn = None
        self._control = None
        self._rsig, self._wsig = socket.socketpair()
        self._rsig.setblocking(False)
        self._wsig.setblocking(False)
        self.sel.register(self._rsig, selectors.EVENT_READ, self._drain_signals)
        if signals:  # only the main thread may; tests run loops in threads
            self._old_wakeup = signal.set_wakeup_fd(self._wsig.fileno())
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, self._on_signal)

    now = staticmethod(time.monotonic)  # a C call, no Python frame per packet

    def _on_signal(self, signum, frame):
        if signum == signal.SIGHUP:
            self.reload_requested = True
        else:
            self.stopping = True

    def _drain_signals(self):
        try:
            while self._rsig.recv(64):
                pass
        except BlockingIOError:
            pass

    def run(self, deadline_fn, timer_fn, idle_fn=None) -> None:
        """Until stopped: poll, the callbacks of what is ready, the timers.

        Per wake-up: one epoll_wait, the callbacks, one clock reading and
        (while it is cheap, see Deadline) one ask for the next deadline:
        the ask of `self.deadline_fn` if a daemon set one (it may swap it,
        e.g. the client while it has no socket), else `deadline_fn`. No
        Python call of the loop's own on that path: after an idle sleep
        each distinct function runs with cold caches (~1.5-2 us each,
        docs/FASTPATH.md), and on the server the ask lies between the
        datagram written to the TUN and the reply read from it."""
        sel = self.sel
        poll, cbs = sel.ep_poll, sel.callbacks
        clock = time.monotonic
        if self.deadline_fn is None:
            self.deadline_fn = deadline_fn
        now = clock()
        dl = Deadline(lambda: self.deadline_fn(), clock)
        dl.ask(now)
        trim = self.trim
        value = dl.value
        cheap = Deadline.CHEAP
        while not self.stopping:
            t = value - now
            if dl.stale and dl.asked + dl.slack - now < t:
                t = dl.asked + dl.slack - now
            events = poll(1.0 if t > 1.0 else (t if t > 0.0 else 0.0), sel.maxevents)
            if events:
                trim.dirty = True
                for fd, _ev in events:
                    cb = cbs.get(fd)
                    if cb is not None:
                        cb()
                    if self.stopping:
                        break
            else:
                trim.idle(now)
            if self.reload_requested and idle_fn is not None:
                self.reload_requested = False
                idle_fn()
            now = clock()
            if dl.slack == 0.0:
                # Deadline.ask inlined (the usual case: a cheap core).
                value = self.deadline_fn()
                cost = clock() - now
                if cost >= cheap:
                    dl.asked_at(now, value, cost)
            else:
                dl.refresh(now)
                value = dl.value
            if now >= value:
                timer_fn(now)
                dl.ask(now)
                value = dl.value

    def serve_control(self, path: str, handlers: dict):
        """Open the control socket; a daemon runs without it if that fails."""
        if not path:
            return None
        try:
            ctl = ControlServer(path, handlers)
        except OSError as e:
            LOG.warning("no control socket at %s: %s", path, e.strerror)
            return None
        self.sel.register(ctl, selectors.EVENT_READ, ctl.on_readable)
        self._control = ctl
        LOG.debug("control socket %s", ctl.path)
        return ctl

    def stop(self) -> None:
        """Stop from another thread (tests); signals do this in the daemon."""
        self.stopping = True
        try:
            self._wsig.send(b"\0")
        except OSError:
            pass

    def request_reload(self) -> dict:
        self.reload_requested = True
        return {"ok": True, "reload": "requested"}

    def close(self) -> None:
        if self._control is not None:
            self._control.close()
        if self.signals:
            signal.set_wakeup_fd(self._old_wakeup)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
        self.sel.close()
        self._rsig.close()
        self._wsig.close()
