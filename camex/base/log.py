"""Logging set-up and throttled warnings.

One line per event at INFO; per-packet detail only at DEBUG. Warnings that
an attacker or a broken peer can trigger per datagram go through `Throttle`,
which lets the first one through and then at most one line per interval per
kind, saying how many were suppressed.
"""

from __future__ import annotations

import os
import sys
import time

# The standard logging levels (same numbers, so either sink understands them).
DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR", CRITICAL: "CRITICAL"}
# The <N> syslog priority journald reads at the start of a line.
_PRIO = {DEBUG: 7, INFO: 6, WARNING: 4, ERROR: 3, CRITICAL: 2}


class Logger:
    """The "camex" logger.

    The daemon calls `setup()` and from then on writes its lines itself:
    the standard `logging` package (with threading, traceback, string, ...)
    costs about 1 MiB resident, 5% of a small daemon's budget, for one
    stream and one format. Until `setup()` (tests, tools that import camex
    modules) lines go to the standard logger named "camex", so that pytest's
    caplog and any host application see them as before.
    """

    def __init__(self):
        self.stream = None   # set by setup(): our own sink
        self.level = INFO
        self.journal = False

    def isEnabledFor(self, level: int) -> bool:
        if self.stream is None:
            return _std().isEnabledFor(level)
        return level >= self.level

    def log(self, level: int, msg: str, *args) -> None:
        if self.stream is None:
            _std().log(level, msg, *args)
            return
        if level < self.level:
            return
        try:
            text = msg % args if args else msg
        except (TypeError, ValueError) as e:  # a bad format must not stop the daemon
            text = f"{msg!r} % {args!r}: {e}"
        name = _NAMES.get(level, str(level))
        if self.journal:
            line = f"<{_PRIO.get(level, 6)}>{name} {text}\n"
        else:
            # As logging's "%(asctime)s camex[%(process)d] %(levelname)s %(message)s".
            now = time.time()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
            line = f"{stamp},{int(now % 1 * 1000):03d} camex[{os.getpid()}] {name} {text}\n"
        try:
            self.stream.write(line)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stderr gone (closed terminal): keep tunnelling

    def debug(self, msg: str, *args) -> None:
        self.log(DEBUG, msg, *args)

    def info(self, msg: str, *args) -> None:
        self.log(INFO, msg, *args)

    def warning(self, msg: str, *args) -> None:
        self.log(WARNING, msg, *args)

    def error(self, msg: str, *args) -> None:
        self.log(ERROR, msg, *args)


def _std():
    import logging
    return logging.getLogger("camex")


LOG = Logger()


def setup(level: str = "info", stream=None) -> None:
    """The daemon's logging: lines on stderr (or `stream`) from `level` up."""
    LOG.level = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR,
                 "critical": CRITICAL}[level.lower()]
    # Under systemd the journal adds its own time stamp and process name.
    LOG.journal = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
    LOG.stream = stream or sys.stderr


class Throttle:
    """Rate-limit repeated log lines per key (e.g. per drop reason)."""

    def __init__(self, logger: Logger = LOG, interval: float = 10.0,
                 clock=time.monotonic, rate: float | None = None, burst: int = 20):
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._last: dict = {}  # key -> (time of last line, suppressed count)
        # Optional budget over all keys (lines per second, token bucket):
        # keys taken from the network (a source address) must not let a
        # flood from many sources through one line each.
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._refilled = clock()

    def _budget(self, now: float) -> bool:
        if self.rate is None:
            return True
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def log(self, level: int, key, msg: str, *args) -> None:
        if not self.logger.isEnabledFor(level):
            return
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval:
            self._last[key] = (last[0], last[1] + 1)
            return
        if len(self._last) > 1024:  # keys come from the network: stay bounded
            self._last.clear()
            last = None
        if not self._budget(now):
            self._last[key] = (last[0] if last else -1e18, (last[1] if last else 0) + 1)
            return
        suppressed = last[1] if last else 0
        if suppressed:
            msg += " (%d similar suppressed)"
            args = args + (suppressed,)
        self._last[key] = (now, 0)
        self.logger.log(level, msg, *args)

    def warning(self, key, msg: str, *args) -> None:
        self.log(WARNING, key, msg, *args)

    def info(self, key, msg: str, *args) -> None:
        self.log(INFO, key, msg, *args)


# A fault in handling one input (a bug: every refusal of bad input is
# counted, never raised) costs that input, not the daemon; one line per kind
# of fault every 10 s, with where it happened, for a bug report.
_FAULTS = Throttle(rate=1, burst=5)


def fault(e: BaseException, source: str) -> None:
    """Report an exception raised while handling one input from `source`
    (e.g. "a datagram from ('192.0.2.1', 4000)"): the input is dropped and
    the daemon goes on."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"
    _FAULTS.warning((type(e).__name__, where),
                    "internal error on %s: %s: %s at %s (dropped; the daemon goes on - "
                    "please report this line)", source, type(e).__name__, e, where)
