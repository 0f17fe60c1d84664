"""Memory-hungry jobs of the daemon in a short-lived forked helper.

A process's peak resident set (VmHWM) never goes down, and two jobs of the
daemon need much memory for a moment: configuring the link through pyroute2
(importing it costs ~20 MiB and 0.1-0.5 s) and scrypt (16 MiB). The daemon
forks a helper for them; the helper's memory goes back to the system when
it exits, and the daemon itself stays small. fork() rather than starting a
new interpreter: the helper needs no interpreter start-up or camex imports.

Protocol: requests and replies are marshal-encoded tuples (marshal is built
into the interpreter: no import), each preceded by a 4-byte length, over
two pipes. A reply is ("ok", result) or ("error", message). The helper
serves requests until the parent closes the request pipe, or until it has
waited `idle` seconds without one: then it exits with IDLE_EXIT without
reading anything, and the parent retries once with a fresh helper.

What the helpers cost is kept in STATS (peak RSS from wait4's rusage), so
that `camex status --json` and the bench can report it.
"""

from __future__ import annotations

import gc
import marshal
import os
import select
import signal
import time

IDLE_EXIT = 75      # the helper waited `idle` seconds for a request, did nothing
MAX_FRAME = 1 << 20
_now = time.monotonic

# name -> {"runs": helpers started, "peak_rss_kib": largest ru_maxrss seen}
STATS: dict = {}


class HelperError(RuntimeError):
    """The helper answered with an error, died, or did not answer in time."""


def _write_frame(fd: int, data: bytes) -> None:
    buf = memoryview(len(data).to_bytes(4, "big") + data)
    while buf:
        n = os.write(fd, buf)
        buf = buf[n:]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes | None:
    """n bytes from fd, None at EOF; TimeoutError when `deadline` passes."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    chunks = []
    while n:
        if deadline is not None:
            left = deadline - _now()
            if left <= 0 or not poller.poll(left * 1000):
                raise TimeoutError
        data = os.read(fd, n)
        if not data:
            return None
        chunks.append(data)
        n -= len(data)
    return b"".join(chunks)


def _read_frame(fd: int, deadline: float | None) -> bytes | None:
    head = _read_exact(fd, 4, deadline)
    if head is None:
        return None
    size = int.from_bytes(head, "big")
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    return _read_exact(fd, size, deadline)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"was killed by signal {sig} ({name})"
    return f"exited with status {os.WEXITSTATUS(status)}"


class Helper:
    """A forked helper that runs `setup()` at once (in the child: imports
    happen while the parent goes on), then answers `call(*request)` with
    `handler(*request)`, `handler` being what setup returned."""

    def __init__(self, name: str, setup, timeout: float | None = 30.0, idle: float = 5.0):
        self.name = name
        self.setup = setup
        self.timeout = timeout
        self.idle = idle
        self.pid = 0
        self._w = self._r = -1

    @property
    def running(self) -> bool:
        return self.pid != 0

    def start(self) -> None:
        """Fork the helper unless one is running (OSError if fork fails)."""
        if self.pid:
            return
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            for fd in (req_r, req_w, rep_r, rep_w):
                os.close(fd)
            raise
        if pid == 0:  # pragma: no cover - runs in the child (tests see its replies)
            status = 70
            try:
                _serve(req_r, rep_w, self.setup, self.idle)
                status = 0
            finally:
                os._exit(status)
        os.close(req_r)
        os.close(rep_w)
        self.pid, self._w, self._r = pid, req_w, rep_r
        st = STATS.setdefault(self.name, {"runs": 0, "peak_rss_kib": 0})
        st["runs"] += 1

    def call(self, *request):
        """The handler's result for `request`; HelperError with a message
        that says what went wrong otherwise."""
        data = marshal.dumps(request)
        for attempt in (1, 2):
            try:
                self.start()
            except OSError as e:
                raise HelperError(f"cannot start the {self.name} helper: {e.strerror}") from None
            deadline = None if self.timeout is None else _now() + self.timeout
            try:
                _write_frame(self._w, data)
                reply = _read_frame(self._r, deadline)
            except BrokenPipeError:
                reply = None
            except TimeoutError:
                self._kill()
                raise HelperError(f"the {self.name} helper did not answer within "
                                  f"{self.timeout:g} s") from None
            except ValueError as e:
                self._kill()
                raise HelperError(f"the {self.name} helper sent garbage: {e}") from None
            if reply is None:
                status = self._reap()
                if attempt == 1 and os.WIFEXITED(status) and os.WEXITSTATUS(status) == IDLE_EXIT:
                    continue  # it gave up waiting just as we asked: it did nothing
                raise HelperError(f"the {self.name} helper {describe_status(status)} "
                                  f"before it answered")
            try:
                kind, value = marshal.loads(reply)
            except (ValueError, EOFError, TypeError) as e:
                self._kill()
                raise HelperError(f"the {self.name} helper sent garbage: {e}") from None
            if kind == "ok":
                return value
            raise HelperError(str(value))
        raise AssertionError("unreachable")

    def release(self, timeout: float = 5.0) -> None:
        """Let the helper exit (it does when the request pipe closes) and
        reap it; kill it if it has not gone within `timeout` s."""
        if not self.pid:
            return
        os.close(self._w)
        self._w = -1
        try:
            while _read_exact(self._r, 1, _now() + timeout) is not None:
                pass  # nothing is expected; read to EOF
        except TimeoutError:
            os.kill(self.pid, signal.SIGKILL)
        self._reap()

    def _kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._reap()

    def _reap(self) -> int:
        _pid, status, usage = os.wait4(self.pid, 0)
        st = STATS[self.name]
        st["peak_rss_kib"] = max(st["peak_rss_kib"], usage.ru_maxrss)
        for fd in (self._w, self._r):
            if fd >= 0:
                os.close(fd)
        self.pid, self._w, self._r = 0, -1, -1
        return status


def run_once(name: str, func, *args, timeout: float | None = None):
    """func(*args) in a helper of its own, which exits right after; the
    result must be marshal-able."""
    helper = Helper(name, lambda: func, timeout=timeout, idle=60.0)
    try:
        return helper.call(*args)
    finally:
        helper.release()


def _serve(req_r: int, rep_w: int, setup, idle: float) -> None:  # pragma: no cover
    """The helper's life: quiet signals, no inherited descriptors, setup,
    then requests until EOF or `idle` seconds without one."""
    # Signals are the parent's business: it ends us by closing the pipe.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass  # forked from a thread other than the main one (tests)
    # No copies of the parent's TUN, sockets or pipe ends: a TUN must go
    # away with the parent, and our request pipe must see EOF when the
    # parent closes its end. The objects that owned them are never touched
    # here; no garbage collection either, so that no finalizer closes a
    # descriptor number that we reuse.
    gc.disable()
    lo, hi = sorted((req_r, rep_w))
    os.closerange(3, lo)
    os.closerange(lo + 1, hi)
    os.closerange(hi + 1, os.sysconf("SC_OPEN_MAX"))
    try:
        handler, failure = setup(), None
    except Exception as e:
        handler, failure = None, f"{type(e).__name__}: {e}"
    poller = select.poll()
    poller.register(req_r, select.POLLIN)
    while True:
        if not poller.poll(idle * 1000):
            os._exit(IDLE_EXIT)
        data = _read_frame(req_r, None)
        if data is None:
            return
        if failure is not None:
            reply = ("error", failure)
        else:
            try:
                reply = ("ok", handler(*marshal.loads(data)))
            except Exception as e:
                reply = ("error", str(e) or type(e).__name__)
        try:
            out = marshal.dumps(reply)
        except ValueError as e:
            out = marshal.dumps(("error", f"reply cannot be sent: {e}"))
        _write_frame(rep_w, out)
