"""Processes and polling for the namespace lab: entering a namespace
(setns for a forked child or for the calling thread), LabProcess (a process
in a namespace with its output in files), wait_until (readiness by polling,
never fixed sleeps) and ping parsing.

lab/netns.py builds namespaces on top of this and re-exports its names.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import re
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Callable, Optional, TypeVar

if TYPE_CHECKING:  # only for annotations: netns imports this module
    from .netns import Namespace

NETNS_DIR = "/var/run/netns"  # where iproute2 and pyroute2 keep named namespaces

_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
# Resolved once at import: the preexec hook of a forked child must not load
# libraries or take locks.
_libc = ctypes.CDLL(None, use_errno=True)
_setns = _libc.setns
_prctl = _libc.prctl

T = TypeVar("T")


class LabError(RuntimeError):
    """A lab step failed (namespace, link, process)."""


class LabTimeout(LabError):
    """A readiness condition did not come true in time."""


# --------------------------------------------------------------------------
# polling


def wait_until(
    check: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.05,
    detail: Optional[Callable[[], str]] = None,
) -> T:
    """Call ``check`` until it returns something truthy; return that value.

    Raises LabTimeout naming ``what`` (and ``detail()``, e.g. a log tail)
    after ``timeout`` seconds. The interval grows a little so that long waits
    do not spin.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout:g} s waiting for {what}"
            if detail is not None:
                msg += "\n" + detail()
            raise LabTimeout(msg)
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)


# --------------------------------------------------------------------------
# entering a namespace


def _ns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def _enter(fd: int) -> None:
    if _setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def _thread_in_ns(name: str):
    """Move the calling thread into namespace ``name`` for the block.

    setns(2) acts on the calling thread only; files opened inside the block
    (/proc/thread-self/net/*, /proc/sys/net/*) belong to that namespace.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(_ns_path(name), os.O_RDONLY)
    try:
        _enter(target)
        try:
            yield
        finally:
            _enter(home)
    finally:
        os.close(target)
        os.close(home)


def in_ns(name: str, fn: Callable[[], T]) -> T:
    """``fn()`` with the calling thread in namespace ``name``, e.g. to make
    a socket there: a socket keeps the namespace it was created in, so it
    can be used from any thread afterwards (lab.attacks.ns_socket)."""
    with _thread_in_ns(name):
        return fn()


@contextlib.contextmanager
def _ns_child(name: str):
    """Keyword arguments for subprocess.run/Popen that start the child in
    namespace ``name`` (dying with the lab, stdin closed); the namespace's
    file descriptor stays open for the block."""
    fd = os.open(_ns_path(name), os.O_RDONLY)
    try:
        yield {"stdin": subprocess.DEVNULL, "pass_fds": (fd,), "preexec_fn": _child_setup(fd)}
    finally:
        os.close(fd)


def _child_setup(ns_fd: int) -> Callable[[], None]:
    def setup() -> None:
        # Runs in the forked child before exec: join the namespace and die
        # with the lab if the lab is killed without a chance to clean up.
        if _setns(ns_fd, _CLONE_NEWNET) != 0:
            os._exit(126)
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return setup


# --------------------------------------------------------------------------
# processes


class LabProcess:
    """A process started inside a namespace; stdout and stderr go to files.

    The process leads its own session, so stop() also reaches its children.
    """

    def __init__(self, ns: Namespace, argv: list[str], name: str, logdir: str, env=None):
        self.ns = ns
        self.argv = [str(a) for a in argv]
        self.name = name
        self.stdout_path = os.path.join(logdir, f"{name}.out")
        self.stderr_path = os.path.join(logdir, f"{name}.err")
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        if env:
            full_env.update(env)
        with _ns_child(ns.name) as in_ns_kw, open(self.stdout_path, "wb") as out, \
                open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=err, env=full_env,
                                          start_new_session=True, **in_ns_kw)
        self.started = time.monotonic()

    def __repr__(self) -> str:
        return f"<LabProcess {self.name} pid={self.pid} ns={self.ns.name}>"

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> Optional[int]:
        return self.popen.poll()

    def running(self) -> bool:
        return self.popen.poll() is None

    def stdout(self) -> str:
        return _read_text(self.stdout_path)

    def stderr(self) -> str:
        return _read_text(self.stderr_path)

    def output(self) -> str:
        """stdout followed by stderr (daemons log to stderr)."""
        return self.stdout() + self.stderr()

    def tail(self, lines: int = 30) -> str:
        text = self.output().splitlines()[-lines:]
        return f"--- last lines of {self.name} (rc={self.returncode}) ---\n" + "\n".join(text)

    def find(self, pattern: str, start: int = 0) -> Optional[re.Match]:
        """First match of regex ``pattern`` in the output from offset ``start``."""
        return re.compile(pattern, re.M).search(self.output(), start)

    def count(self, pattern: str) -> int:
        return len(re.compile(pattern, re.M).findall(self.output()))

    def wait_for_line(
        self, pattern: str, timeout: float = 10.0, start: int = 0, alive: bool = True
    ) -> re.Match:
        """Poll the output until regex ``pattern`` appears (after ``start``).

        With ``alive`` a process that exits first fails the wait at once
        instead of after the timeout.
        """

        def check():
            m = self.find(pattern, start)
            if m is None and alive and not self.running():
                m = self.find(pattern, start)  # it may have printed and exited
                if m is None:
                    raise LabError(f"{self.name} exited before printing /{pattern}/\n{self.tail()}")
            return m

        return wait_until(check, timeout, f"/{pattern}/ in {self.name}", detail=self.tail)

    def mark(self) -> int:
        """Current length of the output, to wait for lines that come later."""
        return len(self.output())

    def signal(self, sig: int) -> None:
        if self.running():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        """Wait for exit; return the exit code (negative: killed by a signal)."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise LabTimeout(f"{self.name} still running after {timeout:g} s\n{self.tail()}") from None

    def stop(self, timeout: float = 3.0) -> Optional[int]:
        """SIGTERM the process group, SIGKILL what is left after ``timeout``;
        reap. Idempotent.

        PIDs wrap quickly on a busy test machine (pid_max 32768), so signals
        go only to a group whose leader we have not reaped yet: until then
        its PID, and so the group ID, cannot belong to anybody else. The
        leader is waited for without reaping (WNOWAIT), the group is
        SIGKILLed for leftovers, and only then is the leader reaped.
        """
        if self.popen.returncode is not None:
            return self.popen.returncode  # reaped earlier: hands off the PID
        _killpg(self.pid, signal.SIGTERM)
        try:
            wait_until(self._leader_exited, timeout, f"{self.name} to exit", interval=0.01)
        except LabTimeout:
            pass
        _killpg(self.pid, signal.SIGKILL)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.popen.returncode

    def _leader_exited(self) -> bool:
        """True once the leader is dead (a zombie still holds its PID)."""
        if self.popen.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------
# ping


@dataclasses.dataclass
class PingResult:
    transmitted: int
    received: int
    rtt_min_ms: Optional[float]
    rtt_avg_ms: Optional[float]
    rtt_max_ms: Optional[float]
    output: str

    @property
    def loss_pct(self) -> float:
        if self.transmitted == 0:
            return 100.0
        return 100.0 * (self.transmitted - self.received) / self.transmitted

    @property
    def ok(self) -> bool:
        return self.received > 0


_PING_COUNTS = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_PING_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/")


def parse_ping(text: str) -> PingResult:
    m = _PING_COUNTS.search(text)
    tx, rx = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    r = _PING_RTT.search(text)
    rtt = tuple(float(x) for x in r.groups()) if r else (None, None, None)
    return PingResult(tx, rx, *rtt, output=text)


