"""Sliding-window replay protection (RFC 6479 style, on a Python int bitmap).

`check` is side-effect free so that a receiver can run it before the AEAD
open and `update` only after authentication succeeded: a forged datagram
never moves the window.
"""


class ReplayWindow:
    __slots__ = ("size", "mask", "top", "bitmap")

    def __init__(self, size: int = 64):
        self.size = size
        self.mask = (1 << size) - 1
        self.top = -1  # highest sequence accepted so far
        self.bitmap = 0  # bit i set: sequence top - i was seen

    def check(self, seq: int) -> bool:
        """True if `seq` would be accepted (new and inside the window)."""
        if seq > self.top:
            return True
        offset = self.top - seq
        if offset >= self.size:
            return False
        return not (self.bitmap >> offset) & 1

    def update(self, seq: int) -> None:
        """Mark `seq` seen; call only after `check` passed and the datagram
        authenticated."""
        if seq > self.top:
            shift = seq - self.top
            # A jump past the window clears it; never shift by a huge count
            # (a peer may send any 64-bit sequence).
            self.bitmap = 1 if shift >= self.size else ((self.bitmap << shift) | 1) & self.mask
            self.top = seq
        else:
            self.bitmap |= 1 << (self.top - seq)

    def accept(self, seq: int) -> bool:
        """check + update in one call, for already authenticated data."""
        if not self.check(seq):
            return False
        self.update(seq)
        return True
