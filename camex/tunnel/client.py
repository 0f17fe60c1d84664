"""The client core the daemon drives when both protocols are allowed: v2 first,
the legacy core as a fallback (AutoClientCore).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..base.contract import PlainReceiver
from ..base.log import LOG
from ..v2 import wire
from ..v2.core import FALLBACK_AFTER, INF, PROBE_INTERVAL, V2ClientCore


def _of_active(name: str, settable: bool = False) -> Any:
    """A property of AutoClientCore that is the active core's attribute."""
    def get(self):
        return getattr(self.active, name)

    def put(self, value) -> None:
        setattr(self.active, name, value)
    return property(get, put if settable else None)


class AutoClientCore:
    """`--protocol auto`: v2 first; legacy only while v2 never answered.

    A camex.base.contract.ClientCore whose queues, configuration and counters
    are those of the active core; its `datagram_received` keeps v2's
    batched paths (a GRO batch, a whole BULK frame) while v2 is active."""

    bulk: ClassVar[bool] = True

    def __init__(self, v2: V2ClientCore, make_legacy, fallback_after: float = FALLBACK_AFTER):
        self.v2 = v2
        self.make_legacy = make_legacy   # () -> LegacyClient
        self.legacy: Any = None   # the LegacyClient once fallen back
        self.active: Any = v2
        self.fallback_after = fallback_after
        self.fallback_at = INF
        self.next_probe = INF
        self.datagram_received = _AutoReceiver(self)

    protocol = property(lambda self: "v2" if self.active is self.v2 else "legacy")
    bulk_ready = property(lambda self: self.active is self.v2 and self.v2.bulk_ready)
    # The v2 core's flat frame path while v2 is active (the daemon reads
    # it once per TUN wake-up, not per super-packet).
    tun_frame = property(lambda self: self.v2.tun_frame if self.active is self.v2 else None)

    # What the daemon reads and drains is the active core's. The queues
    # may be rebound by the daemon (`core.events = []`): they must stay
    # those of the active core, never become the wrapper's own.
    to_net = _of_active("to_net", settable=True)
    to_tun = _of_active("to_tun", settable=True)
    events = _of_active("events", settable=True)
    client_id = _of_active("client_id")
    config = _of_active("config")
    drops = _of_active("drops")
    last_rx = _of_active("last_rx")
    last_register = _of_active("last_register")
    rx_packets = _of_active("rx_packets")
    rx_bytes = _of_active("rx_bytes")
    tx_packets = _of_active("tx_packets")
    tx_bytes = _of_active("tx_bytes")

    def counters(self) -> dict:
        c = self.v2.counters()
        if self.active is self.v2:
            return c
        del c["bulk_tx_frames"], c["bulk_rx_frames"], c["cipher"]   # on legacy: v2 probes only
        return c

    def accept_bulk(self, on: bool) -> None:
        self.v2.accept_bulk(on)

    def tun_super(self, hdr, packet, now: float) -> None:
        self.v2.tun_super(hdr, packet, now)   # only while bulk_ready: v2 is active

    def start(self, now: float) -> None:
        self.v2.start(now)

    def tso_max(self) -> int:
        return self.v2.tso_max()

    def outer_family(self, ipv6: bool) -> None:
        self.v2.outer_family(ipv6)
        if self.legacy is not None:
            self.legacy.outer_family(ipv6)

    def connected(self, now: float) -> None:
        self.active.connected(now)
        if self.active is self.v2 and not self.v2.session.answered and self.fallback_at == INF:
            self.fallback_at = now + self.fallback_after

    def close(self, now: float) -> None:
        if self.active is self.v2:
            self.v2.close(now)

    def tun_packet(self, packet, now: float) -> None:
        self.active.tun_packet(packet, now)

    def _one(self, data, now: float) -> None:
        if wire.is_v2(data):
            self.v2.datagram_received(data, now)
            if self.v2.session.answered:
                self._settle_on_v2(now)
        elif self.active is not self.v2:
            self.active.datagram_received(data, now)
        else:
            self.v2.drops["legacy-while-v2"] += 1

    def next_deadline(self) -> float:
        if self.active is self.v2:
            t = self.v2.next_deadline()
            return t if self.v2.session.answered else min(t, self.fallback_at)
        return min(self.legacy.next_deadline(), self.next_probe)

    def on_timer(self, now: float) -> None:
        if self.active is self.v2:
            if not self.v2.session.answered and now >= self.fallback_at:
                self._fall_back(now)
            else:
                self.v2.on_timer(now)
            return
        self.legacy.on_timer(now)
        if now >= self.next_probe:
            # Still try v2 now and then: an outage of the server at our
            # start must not pin us to legacy for good.
            self.next_probe = now + PROBE_INTERVAL
            self.legacy.to_net.extend(self.v2.session.probe(now))

    def _fall_back(self, now: float) -> None:
        LOG.info("no v2 answer from the server in %.0f s: using the legacy protocol "
                 "(trying v2 again every %.0f s)", self.fallback_after, PROBE_INTERVAL)
        self.legacy = self.make_legacy()
        self.legacy.outer_family(self.v2.outer_v6)
        self.active = self.legacy
        self.v2.session.next_handshake = None   # probes only, from now on
        self.fallback_at = INF
        self.next_probe = now + PROBE_INTERVAL
        self.legacy.start(now)
        self.legacy.connected(now)

    def _settle_on_v2(self, now: float) -> None:
        self.fallback_at = self.next_probe = INF
        if self.active is self.v2:
            return
        LOG.info("the server answers v2: leaving the legacy protocol")
        self.active = self.v2
        if not self.v2.auto:
            self.v2.config = None     # announce the v2 MTU to the interface again
            self.v2.start(now)


class _AutoReceiver(PlainReceiver):
    """AutoClientCore's DatagramReceiver: one datagram at a time through
    the protocol dispatch; GRO batches and whole BULK frames straight to
    v2's batched paths while v2 is the active protocol (a GRO batch holds
    datagrams of one sender and size: the server's, of one protocol)."""

    __slots__ = ("auto",)

    def __init__(self, auto: AutoClientCore):
        super().__init__(auto._one)
        self.auto = auto

    def many(self, datagrams: list, *now: Any) -> None:
        auto = self.auto
        v2 = auto.v2
        if auto.active is v2 and wire.is_v2(datagrams[0]):
            v2.datagram_received.many(datagrams, *now)
            if v2.session.answered:
                auto._settle_on_v2(*now)
        else:
            super().many(datagrams, *now)

    def whole(self, data, size: int, *now: Any) -> bool:
        auto = self.auto
        v2 = auto.v2
        if auto.active is v2 and v2.datagram_received.whole(data, size, *now):
            if v2.session.answered:
                auto._settle_on_v2(*now)
            return True
        return False
