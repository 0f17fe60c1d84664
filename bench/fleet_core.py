"""The camera-fleet benchmark's parts that need no namespace: the inner
packets and their sequence numbers, exact loss counting, and the search
for the highest loss-free rate.

The generator (bench/fleet_workers.py) sends, per step, datagram k of the
step from client k mod N; the inner packet's UDP payload starts with the
step number and k, so the receiver counts exactly which datagrams arrived
(a bitmap per step: duplicates count once, nothing is estimated).
"""

from __future__ import annotations

import socket
import struct
from typing import Optional

INNER_SIZE = 1200          # bytes of each inner IPv4 packet (a video-like stream)
SINK_PORT = 5004           # the inner UDP destination port (RTP's usual one)
SRC_PORT = 5004
MAX_LOSS = 0.001           # "loss-free": under 0.1 %
KEEP_UP = 0.95             # a step the generator offered below this x asked is generator-bound

_IP_UDP = 28
_TAG = struct.Struct("!II")   # step, k


# ------------------------------------------------------------ inner packets


def _checksum(data: bytes) -> int:
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def inner_header(src: str, dst: str, size: int = INNER_SIZE) -> bytes:
    """The 28 bytes of IPv4 + UDP header of every inner packet from ``src``
    to ``dst``. The UDP checksum is 0 ("none", legal in IPv4) so that a
    packet is a fixed header plus a payload that only differs in its first
    8 bytes: building hundreds of thousands per step costs a concatenation
    each, not a checksum in Python."""
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 0, 0x4000, 64, 17, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
    return hdr + struct.pack("!HHHH", SRC_PORT, SINK_PORT, size - 20, 0)


def payload_tail(size: int = INNER_SIZE) -> bytes:
    return bytes(size - _IP_UDP - _TAG.size)


def inner_packet(header: bytes, step: int, k: int, tail: bytes) -> bytes:
    return header + _TAG.pack(step, k) + tail


def tag_of_udp_payload(payload) -> tuple[int, int]:
    """(step, k) from the inner UDP payload (what a socket receives)."""
    return _TAG.unpack_from(payload, 0)


def tag_of_inner(packet) -> tuple[int, int]:
    """(step, k) from a whole inner IPv4 packet (what a tunnel client gets)."""
    return _TAG.unpack_from(packet, _IP_UDP)


# ------------------------------------------------------------ counting


class StepCounter:
    """Which datagrams of each announced step arrived: one byte per datagram
    (a step has at most a few million), so a duplicate counts once and a
    datagram of another step or beyond the announced total is ignored
    (counted as stray)."""

    def __init__(self):
        self.steps: dict[int, bytearray] = {}
        self.stray = 0

    def expect(self, step: int, total: int) -> None:
        self.steps[step] = bytearray(total)

    def mark(self, step: int, k: int) -> None:
        seen = self.steps.get(step)
        if seen is None or k >= len(seen):
            self.stray += 1
            return
        seen[k] = 1

    def received(self, step: int) -> int:
        seen = self.steps.get(step)
        return 0 if seen is None else len(seen) - seen.count(0)

    def silent(self, step: int, n: int) -> list[int]:
        """Senders (k mod ``n``) none of whose datagrams of ``step`` arrived."""
        seen = self.steps.get(step) or bytearray()
        heard = {k % n for k, got in enumerate(seen) if got}
        return sorted({k % n for k in range(len(seen))} - heard)

    def forget(self, step: int) -> None:
        self.steps.pop(step, None)


def loss(offered: int, received: int) -> float:
    """Share of the offered datagrams that never reached the receiver."""
    return 0.0 if offered <= 0 else max(0, offered - received) / offered


# ------------------------------------------------------------ the search


class RateSearch:
    """Steps the offered rate up to find the highest loss-free one.

    Doubling from ``start`` until a step loses (>= MAX_LOSS), then bisecting
    between the best passing and the lowest failing rate until they are
    within ``precision`` (relative) or ``max_steps`` ran. If even ``start``
    fails, halves downward (at most down to ``floor``). A step the
    generator could not offer (achieved below KEEP_UP x asked) is not a
    verdict on the server: the search stops there and says so
    (``generator_bound``), with the best passing rate as the result.

    Rates are datagrams per second; ``record`` takes what the step really
    did (offered = datagrams sent, received = counted at the receiver).
    """

    def __init__(self, start: float = 4000.0, precision: float = 0.08, max_steps: int = 12,
                 ceiling: float = 1e6, floor: float = 1000.0):
        self.start = start
        self.precision = precision
        self.max_steps = max_steps
        self.ceiling = ceiling
        self.floor = floor
        self.steps: list[dict] = []
        self.lo: Optional[float] = None      # highest asked rate that passed
        self.hi: Optional[float] = None      # lowest asked rate that failed
        self.best: Optional[dict] = None     # the passing step with the highest achieved rate
        self.generator_bound = False

    def next_rate(self) -> Optional[float]:
        if self.generator_bound or len(self.steps) >= self.max_steps:
            return None
        if not self.steps:
            return self.start
        if self.hi is None:
            nxt = self.lo * 2
            return nxt if nxt <= self.ceiling else None
        if self.lo is None:
            nxt = self.hi / 2
            return nxt if nxt >= self.floor else None
        if self.hi / self.lo <= 1 + self.precision:
            return None
        return (self.lo + self.hi) / 2

    def record(self, asked: float, offered: int, received: int, seconds: float,
               **extra) -> dict:
        achieved = offered / seconds if seconds > 0 else 0.0
        step = {"asked": round(asked, 1), "offered": offered, "received": received,
                "seconds": round(seconds, 3), "achieved": round(achieved, 1),
                "achieved_ratio": round(achieved / asked, 4) if asked else None,
                "loss": round(loss(offered, received), 6), **extra}
        step["passed"] = offered > 0 and step["loss"] < MAX_LOSS
        self.steps.append(step)
        if step["passed"] and achieved < KEEP_UP * asked:
            self.generator_bound = True
        if step["passed"]:
            self.lo = asked if self.lo is None else max(self.lo, asked)
            if self.best is None or achieved > self.best["achieved"]:
                self.best = step
        else:
            self.hi = asked if self.hi is None else min(self.hi, asked)
            if self.lo is not None and self.hi <= self.lo:
                # A noisy machine: a higher rate passed before. Keep the pass,
                # search just above it.
                self.hi = self.lo * (1 + self.precision / 2)
        return step

    def result(self) -> dict:
        """The search's verdict for the report."""
        b = self.best
        return {"max_rate": b["achieved"] if b else None,
                "best_step": self.steps.index(b) if b else None,
                "generator_bound": self.generator_bound, "steps": self.steps}
