"""The v2 replay window: camex.base.replay.ReplayWindow sized for v2.

2048 packets (WireGuard's in-kernel window is 8192): `check` before the
AEAD open, `update` only after it authenticated.
"""

from ..base.replay import ReplayWindow as _Window

WINDOW = 2048


class ReplayWindow(_Window):
    __slots__ = ()

    def __init__(self, size: int = WINDOW):
        super().__init__(size)
