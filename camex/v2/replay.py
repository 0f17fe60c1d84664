"""Sliding-window replay protection for v2 transport counters.

A Python int is the bitmap (bit i set: counter top - i was seen), so the
window can be large (2048 by default, WireGuard uses 8192 in-kernel) at the
cost of a shift and a mask per accepted packet. `check` has no side effect,
so the receiver runs it before the AEAD open and `update` only after the
datagram authenticated: a forged datagram never moves the window.
"""

WINDOW = 2048


class ReplayWindow:
    __slots__ = ("size", "mask", "top", "bitmap")

    def __init__(self, size: int = WINDOW):
        self.size = size
        self.mask = (1 << size) - 1
        self.top = -1  # highest counter accepted so far
        self.bitmap = 0

    def check(self, counter: int) -> bool:
        """True if `counter` is new and not older than the window."""
        if counter > self.top:
            return True
        offset = self.top - counter
        if offset >= self.size:
            return False
        return not (self.bitmap >> offset) & 1

    def update(self, counter: int) -> None:
        """Record `counter`; only after `check` passed and it authenticated."""
        if counter > self.top:
            shift = counter - self.top
            # A jump beyond the window clears it (and never shifts a huge int).
            self.bitmap = 1 if shift >= self.size else ((self.bitmap << shift) | 1) & self.mask
            self.top = counter
        else:
            self.bitmap |= 1 << (self.top - counter)
