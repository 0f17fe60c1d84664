"""A client that speaks v2 when the server does, else legacy; free of I/O.

It has the interface of LegacyClient (`start`, `connected`, `tun_packet`,
`datagram_received`, `on_timer`, `next_deadline`; `to_net`, `to_tun`,
`events`), so the daemon does not know which protocol runs.

With `--protocol auto` and a passphrase it starts a v2 handshake. If the
server answers nothing v2 within FALLBACK seconds (a C server drops v2
datagrams silently), it registers over the legacy protocol too, and from
then on offers one v2 handshake with each legacy REGISTER: a camex server
that comes up later is upgraded to v2 at once. Once a v2 session has been
established, the client never goes back to legacy in this process. An
attacker who drops every v2 datagram during the first seconds can force the
legacy protocol; `--protocol v2` on the client or `--no-legacy` on the
server rule that out (docs/PROTOCOL.md, "Downgrade").
"""

from __future__ import annotations

from collections import Counter

from ..log import LOG, Throttle
from ..v2 import wire
from ..v2.client import ClientSession
from ..v2.events import Deliver, Down, Refused, Send, Up
from .client import PATH_MTU, IfConfig, LegacyClient, Reconnect

FALLBACK = 3.0
V2_MTU = PATH_MTU - 28 - wire.OVERHEAD  # one inner packet per datagram fits 1500


class ClientMux:
    def __init__(self, *, v2: ClientSession, legacy: LegacyClient | None,
                 auto: bool, local_cidr=None, gateway=None, routes=(), mtu=None):
        self.v2 = v2
        self.legacy = legacy  # None: --protocol v2
        self.auto = auto
        self.local_cidr = local_cidr
        self.gateway = gateway
        self.routes = list(routes)
        self.mtu_override = mtu
        self.active = None  # "v2" | "legacy" | None while undecided
        self.v2_seen = False  # the server has answered v2 at least once
        self.started_at = None
        self.to_net: list = []
        self.to_tun: list = []
        self.events: list = []
        self.throttle = Throttle()
        self.config: IfConfig | None = None
        self.v2_deadline = None
        self.client_id = legacy.client_id if legacy is not None else v2.client_id
        self.v2_drops = Counter()
        self.tx_packets = self.tx_bytes = self.rx_packets = self.rx_bytes = 0

    # Exposed for status and the daemon's silence bookkeeping.
    @property
    def drops(self):
        d = Counter(self.legacy.drops) if self.legacy is not None else Counter()
        for k, v in self.v2.stats.items():
            if v and k not in ("handshakes", "inits", "cookies"):
                d[f"v2-{k}"] = v
        return d

    @property
    def last_rx(self):
        if self.active == "legacy":
            return self.legacy.last_rx
        s = self.v2.current
        return s.last_received if s is not None and s.last_received > 0 else None

    @property
    def last_register(self):
        return self.legacy.last_register if self.legacy is not None else 0.0

    @property
    def protocol(self) -> str:
        return self.active or "v2?"

    # ------------------------------------------------------------ lifecycle

    def start(self, now: float) -> None:
        if not self.auto:
            self._configure(IfConfig(self.local_cidr, self._mtu(None), self.gateway,
                                     list(self.routes)))

    def connected(self, now: float) -> None:
        if self.started_at is None:
            self.started_at = now
            self._v2(self.v2.start(now), now)
        elif self.active == "legacy":
            self.legacy.connected(now)
            self._flush_legacy()
            self._probe_v2(now)

    def _mtu(self, offered):
        if self.mtu_override:
            return self.mtu_override
        if offered:
            return offered
        return V2_MTU if self.active != "legacy" else \
            PATH_MTU - 28 - 43  # legacy encrypted overhead

    def _configure(self, cfg: IfConfig) -> None:
        if cfg != self.config:
            self.config = cfg
            self.events.append(cfg)

    # ------------------------------------------------------------ v2 events

    def _v2(self, actions, now: float) -> None:
        for a in actions:
            if isinstance(a, Send):
                self.to_net.append(a.data)
            elif isinstance(a, Deliver):
                for p in a.packets:
                    self.rx_packets += 1
                    self.rx_bytes += len(p)
                self.to_tun.extend(a.packets)
            elif isinstance(a, Up):
                self._v2_up(a.config, now)
            elif isinstance(a, Down):
                LOG.info("v2 session down: %s", a.reason)
            elif isinstance(a, Refused):
                self.throttle.warning("refused", "server refused us (v2): %s", a.message)

    def _v2_up(self, config, now: float) -> None:
        first = not self.v2_seen
        self.v2_seen = True
        if self.active == "legacy":
            LOG.info("server speaks v2: leaving the legacy protocol")
        self.active = "v2"
        if first:
            LOG.info("protocol v2 session established")
        if self.auto:
            if config is None or config.local_cidr is None:
                return
            self._configure(IfConfig(config.local_cidr, self._mtu(config.mtu),
                                     config.gateway_ip, list(config.routes) + [
                                         r for r in self.routes if r not in config.routes]))
        else:
            mtu = config.mtu if config is not None else None
            self._configure(IfConfig(self.local_cidr, self._mtu(mtu), self.gateway,
                                     list(self.routes)))

    def _fall_back(self, now: float) -> None:
        LOG.info("no v2 answer from the server in %.0f s: using the legacy protocol "
                 "(and offering v2 with each REGISTER)", FALLBACK)
        self.active = "legacy"
        self.v2.close(now)  # stop its 1 s handshake retries
        self.legacy.start(now)
        if self.config is not None and not self.auto:
            self._configure(IfConfig(self.local_cidr, self._mtu(None), self.gateway,
                                     list(self.routes)))
        self.legacy.connected(now)
        self._flush_legacy()

    def _probe_v2(self, now: float) -> None:
        self.v2.close(now)
        self._v2(self.v2.start(now), now)
        self.v2.handshaking = False  # one offer per REGISTER, no 1 s retries
        self.v2.next_handshake = None

    def _flush_legacy(self) -> None:
        leg = self.legacy
        if leg.to_net:
            self.to_net.extend(leg.to_net)
            leg.to_net.clear()
        if leg.to_tun:
            self.to_tun.extend(leg.to_tun)
            leg.to_tun.clear()
        if leg.events:
            for ev in leg.events:
                if isinstance(ev, IfConfig):
                    self._configure(ev)
                else:
                    self.events.append(ev)
            leg.events.clear()

    # ------------------------------------------------------------ data path

    def tun_packet(self, packet, now: float) -> None:
        if self.active == "legacy":
            self.legacy.tun_packet(packet, now)
            self._flush_legacy()
            return
        if len(packet) < 20 or packet[0] >> 4 != 4:
            return
        self.tx_packets += 1
        self.tx_bytes += len(packet)
        self.to_net.extend(self.v2.encrypt([packet], now))

    def datagram_received(self, data, now: float) -> None:
        if wire.is_v2(data):
            self._v2(self.v2.receive(data, now), now)
        elif self.legacy is not None and self.active == "legacy":
            self.legacy.datagram_received(data, now)
            self._flush_legacy()
        else:
            self.v2_drops["not-v2"] += 1

    # --------------------------------------------------------------- timers

    def next_deadline(self) -> float:
        if self.active == "legacy":
            return self.legacy.next_deadline()
        t = self.v2.next_timer()
        if self.active is None and self.legacy is not None and self.started_at is not None:
            fb = self.started_at + FALLBACK
            t = fb if t is None else min(t, fb)
        return t if t is not None else (self.started_at or 0.0) + 1.0

    def on_timer(self, now: float) -> None:
        if self.active == "legacy":
            before = self.legacy.last_register
            self.legacy.on_timer(now)
            if any(isinstance(e, Reconnect) for e in self.legacy.events):
                pass  # the probe goes with the REGISTER on the new socket
            elif self.legacy.last_register != before:
                self._probe_v2(now)
            self._flush_legacy()
            return
        if (self.active is None and self.legacy is not None and not self.v2_seen
                and now >= self.started_at + FALLBACK):
            self._fall_back(now)
            return
        self._v2(self.v2.on_timer(now), now)

    def close(self, now: float) -> None:
        """Say goodbye on v2 (the server frees our address at once)."""
        if self.active == "v2":
            self.to_net.extend(self.v2.close(now))
