"""The server daemon's side of the state file: when to load and save, and
the log lines. The core snapshots and restores (camex.core.server_state),
camex.statefile encodes, checks and writes."""

from __future__ import annotations

import time

from .core import server_state
from .log import LOG
from .statefile import SHOW_REASONS, Refused, StateFile, decode, floor_of

# Saved this often (and at a clean stop): after a SIGKILL or a power cut the
# replay windows are at most this old (docs/OPERATIONS.md, "Restarts").
SAVE_INTERVAL = 1.0


class ServerState:
    def __init__(self, legacy, opts, wall=time.time):
        self.legacy = legacy
        self.wall = wall
        self.file = StateFile(opts.state_dir, opts.port, legacy.encrypt)
        self.next_save = 0.0
        self._last = None

    def key_for(self, name):
        key = self.legacy._key_by_id.get(name)
        return None if key is None else key.key

    def load(self, now: float) -> None:
        """Restore what the last server saved; one log line whatever happens."""
        self.file.prepare()
        self.next_save = now + SAVE_INTERVAL
        data = self.file.read() if self.file.usable else None
        if data is None:
            return
        path = self.file.path
        try:
            state, age, notes = decode(data, host=self.file.host, port=self.file.port,
                                       encrypted=self.legacy.encrypt, now_wall=self.wall(),
                                       key_for=self.key_for)
        except Refused as e:
            hw = floor_of(data)
            kept = hw is not None and self.legacy.seq_floor.restore(hw)
            LOG.warning("state file %s ignored: %s%s", path, e,
                        "; its counter high-water mark is kept" if kept else "")
            return
        restored, ignored = server_state.restore(self.legacy, state, now, self.wall(), age)
        ignored = notes + ignored
        msg = f"state file {path} ({age:.1f} s old): restored {restored} legacy client(s)"
        if ignored:
            shown = "; ".join(ignored[:SHOW_REASONS])
            more = f"; and {len(ignored) - SHOW_REASONS} more" \
                if len(ignored) > SHOW_REASONS else ""
            LOG.warning("%s, ignored %d entr%s: %s%s", msg, len(ignored),
                        "y" if len(ignored) == 1 else "ies", shown, more)
        else:
            LOG.info("%s", msg)

    def save(self, now: float) -> None:
        self.next_save = now + SAVE_INTERVAL
        snap = server_state.snapshot(self.legacy, now, self.wall())
        if not snap["peers"] and snap == self._last:
            return  # nothing to keep has changed (an idle server writes nothing)
        if self.file.save(snap, self.wall(), self.key_for):
            self._last = snap
