"""The event loop shared by both roles: selector, clock, signals, control
socket, pid file and process hardening.

One thread, one selector. The cores (camex.core) decide everything; the
daemons (camex.client_daemon, camex.server_daemon) only move bytes between
them and the kernel. Signals become events: SIGINT/SIGTERM stop, SIGHUP
reloads (server).
"""

from __future__ import annotations

import ctypes
import os
import resource
import selectors
import signal
import socket
import time

from .control import ControlServer
from .log import LOG

BATCH = 64  # datagrams or packets handled per readiness event
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
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


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


class Loop:
    """Selector, clock and signals shared by both roles."""

    def __init__(self, signals: bool = True):
        self.sel = selectors.DefaultSelector()
        self.signals = signals
        self.stopping = False
        self.reload_requested = False
        self._control = None
        self._rsig, self._wsig = socket.socketpair()
        self._rsig.setblocking(False)
        self._wsig.setblocking(False)
        self.sel.register(self._rsig, selectors.EVENT_READ, self._drain_signals)
        if signals:  # only the main thread may; tests run loops in threads
            self._old_wakeup = signal.set_wakeup_fd(self._wsig.fileno())
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, self._on_signal)

    @staticmethod
    def now() -> float:
        return time.monotonic()

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
        while not self.stopping:
            now = self.now()
            deadline = deadline_fn()
            timeout = max(0.0, min(deadline - now, 1.0))
            for key, _ in self.sel.select(timeout):
                key.data()
                if self.stopping:
                    break
            if self.reload_requested and idle_fn is not None:
                self.reload_requested = False
                idle_fn()
            now = self.now()
            if now >= deadline_fn():
                timer_fn(now)

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


