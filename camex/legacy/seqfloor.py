"""Where legacy sequence counters start, so that they never go back.

The deployed C client keeps one replay window for its whole life (spec,
flaw 5): a server that restarts and counts from 0 again is dropped until
its counter passes the old one. So every counter a camex sender opens starts
above every value it or a predecessor used:

- from the wall clock in nanoseconds. No camex sender seals a datagram per
  nanosecond, so a counter opened at wall time t has stayed below the clock
  ever since: a later start from the clock is above it, as long as the clock
  has not stepped back;
- from a floor: above every counter this process opened or retired (so two
  starts in one process never meet, whatever the clock does), and, in a
  server with a state directory, above the high-water mark its predecessor
  saved plus RESTORE_MARGIN (a clock that stepped back, e.g. a board without
  a battery-backed clock that boots in 1970).

Free of I/O: the clock is passed in.
"""

from __future__ import annotations

import time

# Added to a saved high-water mark: the datagrams a predecessor may have
# sent between its last save and a crash. 2**40 is ~1100 s at one datagram
# per nanosecond, far beyond a save interval of one second.
RESTORE_MARGIN = 1 << 40
# The wire field is a u64; a floor above this (a tampered file) is refused,
# leaving 2**62 values (146 years at a datagram a nanosecond) of room.
MAX_FLOOR = 1 << 62


class SeqFloor:
    """Starts of send counters: each above the wall clock (ns), every start
    before it, every retired counter, and a restored high-water mark."""

    __slots__ = ("clock", "floor")

    def __init__(self, clock=time.time_ns, floor: int = 0):
        self.clock = clock
        self.floor = floor

    def start(self) -> int:
        """A new counter's first value (strictly above every earlier start)."""
        s = max(self.clock(), self.floor + 1)
        self.floor = s
        return s

    def retire(self, seq: int) -> None:
        """A counter stops at `seq` (its next unused value): later starts are
        above it."""
        if seq > self.floor:
            self.floor = seq

    def restore(self, high_water: int) -> bool:
        """A predecessor's saved high-water mark; False (ignored) if it cannot
        be one (not an int, negative or past MAX_FLOOR)."""
        if type(high_water) is not int or not 0 <= high_water <= MAX_FLOOR:
            return False
        self.retire(high_water + RESTORE_MARGIN)
        return True

    def high_water(self, live=()) -> int:
        """What a successor must start above: the floor and every live counter."""
        return max([self.floor, *live])
