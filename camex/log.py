"""Logging set-up and throttled warnings.

One line per event at INFO; per-packet detail only at DEBUG. Warnings that
an attacker or a broken peer can trigger per datagram go through `Throttle`,
which lets the first one through and then at most one line per interval per
kind, saying how many were suppressed.
"""

from __future__ import annotations

import logging
import os
import sys
import time

LOG = logging.getLogger("camex")


def setup(level: str = "info", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    # Under systemd the journal adds its own time stamp and process name.
    if os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"):
        fmt = "%(levelname)s %(message)s"
        handler.setFormatter(_SyslogPriority(fmt))
    else:
        fmt = "%(asctime)s camex[%(process)d] %(levelname)s %(message)s"
        handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger("camex")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class _SyslogPriority(logging.Formatter):
    """Prefix lines with the <N> syslog priority that journald understands."""

    _PRIO = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4,
             logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record):
        return "<%d>%s" % (self._PRIO.get(record.levelno, 6), super().format(record))


class Throttle:
    """Rate-limit repeated log lines per key (e.g. per drop reason)."""

    def __init__(self, logger: logging.Logger = LOG, interval: float = 10.0,
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
        self.log(logging.WARNING, key, msg, *args)

    def info(self, key, msg: str, *args) -> None:
        self.log(logging.INFO, key, msg, *args)
