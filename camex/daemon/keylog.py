"""`camex --keylog FILE`: append v2 session keys to FILE, for camex-dissect.

The v2 client and server cores call `keylog(line)` with two lines per new
session, `CAMEX_V2 <receiver index> <key>` (docs/PROTOCOL.md §10); this is
the callable the daemons pass them. It is the SSLKEYLOGFILE idea: whoever
holds the file decrypts every session it lists, so the file is created
0600 (an existing one is tightened to 0600) and the daemon says so loudly
at start. Lines are appended with one write(2) each on an O_APPEND
descriptor, so a client and a server may share one file. A new session
happens about every two minutes: this is never per-packet work.
"""

from __future__ import annotations

import os
import stat

from ..base.log import LOG, Throttle
from .loop import StartupError

WARNING = ("--keylog %s: v2 SESSION KEYS ARE WRITTEN TO THIS FILE - anyone who can read it "
           "can decrypt this tunnel's traffic. For debugging only; remove it afterwards.")


class KeyLogFile:
    """Callable(line) appending to the key log; open errors are StartupError."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                              0o600)
        except OSError as e:
            raise StartupError(f"--keylog: {path}: {e.strerror or e}") from None
        st = os.fstat(self.fd)
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
            try:
                os.fchmod(self.fd, 0o600)
                LOG.warning("--keylog %s: was readable by others, now mode 0600", path)
            except OSError as e:
                LOG.warning("--keylog %s: readable by others and cannot be changed: %s",
                            path, e.strerror or e)
        self.throttle = Throttle()
        self.lines = 0
        LOG.warning(WARNING, path)

    def __call__(self, line: str) -> None:
        try:
            os.write(self.fd, (line + "\n").encode("ascii"))
            self.lines += 1
        except OSError as e:  # a full disk must not stop the tunnel
            self.throttle.warning("keylog", "--keylog %s: write failed: %s", self.path,
                                  e.strerror or e)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_keylog(path: str | None):
    """The keylog callable for the cores, or None without --keylog."""
    return KeyLogFile(path) if path else None
