"""The server daemon's side of the state file: when to load and save, and
the log lines. The core snapshots and restores (camex.tunnel.server_state),
camex.daemon.statefile encodes, checks and writes."""

from __future__ import annotations

import time

from ..tunnel import server_state
from ..base.log import LOG, fault
from .statefile import SHOW_REASONS, Refused, StateFile, boot_clock, decode, floor_of

# Saved this often (and at a clean stop): after a SIGKILL or a power cut the
# replay windows are at most this old (docs/OPERATIONS.md, "Restarts").
# A big table is saved less often, so that encoding it (20-40 us an entry
# on a slow core) stays around 1% of the loop's time: every N/250 s for N
# entries.
SAVE_INTERVAL = 1.0
ENTRIES_PER_SECOND = 250
LARGE = 256   # entries: a save this big leaves ~1 KB of freed heap per entry
# v2 clients are nudged only if the file is fresher than this: after longer
# their sessions are gone anyway (they handshake on their own).
V2_HINT_MAX_AGE = 180.0


class ServerState:
    """`core` is the ServerMux: its legacy server's clients are kept, its v2
    clients get a NOSESSION from the successor (they handshake at once)."""

    def __init__(self, core, opts, wall=time.time):
        self.core = core
        self.legacy = core.legacy
        self.wall = wall
        self.file = StateFile(opts.state_dir, opts.port, bool(opts.encrypt))
        self.next_save = 0.0
        self._last = None     # what the file holds (server_state.fingerprint), if known
        self._written = 0.0

    def key_for(self, name):
        if self.legacy is None:
            return None
        key = self.legacy._key_by_id.get(name)
        return None if key is None else key.key

    def load(self, now: float) -> None:
        """Restore what the last server saved; one log line whatever happens."""
        self.next_save = now + SAVE_INTERVAL
        try:
            self._load(now)
        except Exception as e:  # noqa: BLE001 - a bad file must never stop a start
            fault(e, f"the state file {self.file.path} (ignored)")

    def _load(self, now: float) -> None:
        self.file.prepare()
        data = self.file.read() if self.file.usable else None
        if data is None:
            return
        path = self.file.path
        try:
            state, age, notes = decode(data, host=self.file.host, port=self.file.port,
                                       encrypted=self.file.encrypted, now_wall=self.wall(),
                                       key_for=self.key_for, boot=boot_clock())
        except Refused as e:
            hw = floor_of(data)
            kept = hw is not None and self.legacy is not None and \
                self.legacy.seq_floor.restore(hw)
            LOG.warning("state file %s ignored: %s%s", path, e,
                        "; its counter high-water mark is kept" if kept else "")
            return
        restored, ignored = 0, []
        if self.legacy is not None:
            restored, ignored = server_state.restore(self.legacy, state, now, age)
        ignored = notes + ignored
        hinted = 0
        # (A server whose v2 half waits for v2 clients starts it for these.)
        if age < V2_HINT_MAX_AGE and (self.core.v2 is not None or
                                      (state.get("v2") and self.core.start_v2())):
            hints, bad = server_state.v2_hints(state.get("v2"))
            if bad:
                ignored.append(f"{bad} malformed v2 entr{'y' if bad == 1 else 'ies'}")
            self.core.outbox.extend(hints)
            hinted = len(hints)
        msg = (f"state file {path} ({age:.1f} s old): restored {restored} legacy client(s), "
               f"asked {hinted} v2 client(s) to handshake again")
        if ignored:
            shown = "; ".join(ignored[:SHOW_REASONS])
            more = f"; and {len(ignored) - SHOW_REASONS} more" \
                if len(ignored) > SHOW_REASONS else ""
            LOG.warning("%s, ignored %d entr%s: %s%s", msg, len(ignored),
                        "y" if len(ignored) == 1 else "ies", shown, more)
        else:
            LOG.info("%s", msg)

    def save(self, now: float) -> bool:
        """Save if anything it keeps changed; True when a file of more than
        LARGE entries was written (its encoding's garbage is worth handing
        back to the system at once: camex.daemon.loop.HeapTrim)."""
        try:
            return self._save(now) > LARGE
        except Exception as e:  # noqa: BLE001 - the data path goes on without it
            fault(e, "saving the state file")
            return False

    def _save(self, now: float) -> int:
        # Entries to encode: clients and the replay windows kept beside them.
        n = len(self.legacy.by_endpoint) + len(self.legacy._replay) \
            if self.legacy is not None else 0
        self.next_save = now + max(SAVE_INTERVAL, n / ENTRIES_PER_SECOND)
        # Nothing it keeps changed (the clients, their windows and counters,
        # the v2 sessions): the file on disk is still exact - its idle and
        # connected times are durations to which a restore adds the file's
        # age - so it is not written again. v2 hints are only sent from a
        # file fresher than V2_HINT_MAX_AGE: rewritten well within that.
        fp = (server_state.fingerprint(self.legacy) if self.legacy is not None else None,
              server_state.v2_snapshot(self.core.v2.server) if self.core.v2 is not None else None)
        if fp == self._last and not (fp[1] and now - self._written >= V2_HINT_MAX_AGE / 3):
            return 0
        snap = server_state.snapshot(self.legacy, now) \
            if self.legacy is not None else {"peers": [], "windows": []}
        if fp[1] is not None:
            snap["v2"] = fp[1]
        if self.file.save(snap, self.wall(), self.key_for):
            self._last, self._written = fp, now
            return n
        return 0
