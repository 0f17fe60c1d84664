"""A server that speaks both protocols on one UDP port, free of I/O.

The first bytes of a datagram say which protocol it belongs to (a v2
datagram starts with 0xC2 and a type 1..5; legacy ones start with "CX2P" or
an IPv4 header), so one socket serves legacy clients (LegacyServer) and v2
clients (V2Server). Both share one address space: a packet from any client
is relayed to whichever client holds its destination, over that client's
protocol, or to the server's own TUN.

Inputs and outputs are those of LegacyServer: `datagram_received`,
`tun_packet`, `on_timer`; `outbox` (datagram, endpoint) and `to_tun`.
"""

from __future__ import annotations

import os

from ..legacy import codec
from ..log import LOG, Throttle
from ..v2 import wire
from ..v2.events import Deliver, Down, Roamed, Send, Up
from ..v2.kdf import KeyStore
from ..v2.server import Grant, V2Server, grant_for
from ..v2.session import Timers
from .server import GLOBAL, LegacyServer


class ServerMux:
    def __init__(self, *, passphrase: bytes | None, encrypt: bool, config=None,
                 legacy: bool = True, v2: bool = True, local_delivery: bool = False,
                 timers: Timers | None = None, rng=os.urandom, keylog=None, now: float = 0.0):
        self.now = now
        self.config = config
        self.local_delivery = local_delivery
        self.outbox: list = []
        self.to_tun: list = []
        self.throttle = Throttle()
        self.refused_legacy = 0
        self.legacy = None
        if legacy:
            self.legacy = LegacyServer(
                encrypt=encrypt, global_key=codec.derive_key(passphrase) if encrypt else None,
                config=config, rng=rng, local_delivery=local_delivery)
            self.legacy.outbox = self.outbox
            self.legacy.to_tun = self.to_tun
        self.v2 = None
        if v2:
            self.v2 = V2Server(self._key_store(passphrase, config), self.authorize,
                               timers=timers, rng=rng, keylog=keylog)
            if self.legacy is not None:
                self.legacy.foreign = self._to_v2
                self.legacy.holder_elsewhere = self._v2_identity_at

    @staticmethod
    def _key_store(passphrase, config) -> KeyStore:
        per_client = dict(config.psk_entries()) if config is not None else {}
        return KeyStore(passphrase, per_client)

    # ------------------------------------------------------------ policy

    def _key_name(self, client_id: str | None) -> str:
        section = self.config.client(client_id) if self.config and client_id else None
        return section.id if section is not None and section.psk else GLOBAL

    def _pinned_owner(self, ip) -> str | None:
        """The client section whose profile pins this address, if any."""
        if self.config is None:
            return None
        for cid in self.config.clients:
            prof = self.config.profile_for(cid)
            if prof.local_cidr is not None and prof.local_cidr.ip == ip:
                return cid
        return None

    def authorize(self, client_id: str, request):
        """What a v2 client may have (V2Server calls this after the
        handshake authenticated it with the key of `client_id`)."""
        cid = (client_id or "").lower()
        profile = self.config.profile_for(client_id) if self.config and client_id else None
        if not request.auto and request.local_cidr is not None:
            owner = self._pinned_owner(request.local_cidr.ip)
            if owner is not None and owner != cid:
                return wire.Refusal(wire.ERR_ADDRESS,
                                    f"{request.local_cidr.ip} belongs to another client")
        grant = grant_for(request, profile, profile.allowed if profile else ())
        if isinstance(grant, Grant) and self.legacy is not None:
            other = self.legacy.identity_of(grant.address.packed)
            me = (self._key_name(client_id), cid or None)
            if other is not None and not LegacyServer._same_client(other, me):
                return wire.Refusal(wire.ERR_ADDRESS,
                                    f"{grant.address} is in use by a legacy client")
        return grant

    def _v2_identity_at(self, packed: bytes):
        peer = self.v2.by_address.get(int.from_bytes(packed, "big"))
        if peer is None:
            return None
        cid = peer.client_id.lower() if peer.client_id else None
        return (self._key_name(peer.client_id), cid)

    # ----------------------------------------------------------- receive

    def datagram_received(self, data, addr, now: float) -> None:
        self.now = now
        if wire.is_v2(data):
            if self.v2 is None:
                self.throttle.warning("v2-off", "ignored v2 datagrams from %s:%d: v2 is "
                                      "off on this server", addr[0], addr[1])
                return
            self._actions(self.v2.receive(data, addr, now), now)
        elif self.legacy is not None:
            self.legacy.datagram_received(data, addr, now)
        else:
            self.refused_legacy += 1
            self.throttle.warning("legacy-off", "refused legacy-protocol datagrams from "
                                  "%s:%d (--no-legacy)", addr[0], addr[1])

    def _actions(self, actions, now: float) -> None:
        for a in actions:
            if isinstance(a, Send):
                self.outbox.append((a.data, a.addr))
            elif isinstance(a, Deliver):
                for packet in a.packets:
                    self._route(packet, a.peer, now)
            elif isinstance(a, Up):
                peer = a.peer
                if self.legacy is not None:
                    self.legacy.evict(peer.grant.address.packed, "moved to protocol v2")
                LOG.info("client %s connected (v2)", peer.describe())
            elif isinstance(a, Down):
                if a.peer is not None:
                    LOG.info("client %s gone: %s", a.peer.describe(), a.reason)
            elif isinstance(a, Roamed):
                LOG.debug("client %s roamed from %s:%d", a.peer.describe(), *a.old)

    # ------------------------------------------------------------ routing

    def _route(self, packet, src, now: float) -> None:
        """An inner packet from a v2 client (source already checked)."""
        dst = bytes(packet[16:20])
        if self.legacy is not None:
            peer = self.legacy.by_ip.get(dst)
            if peer is not None:
                self.legacy.send_data(peer, packet)
                return
        peer = self.v2.route(dst)
        if peer is not None and peer is not src:
            self.outbox.extend(self.v2.send(peer, [packet], now))
        elif peer is None and self.local_delivery:
            self.to_tun.append(packet)

    def _to_v2(self, packet) -> bool:
        """A legacy client's packet for an address no legacy client holds."""
        peer = self.v2.route(bytes(packet[16:20]))
        if peer is None:
            return False
        self.outbox.extend(self.v2.send(peer, [packet], self.now))
        return True

    def tun_packet(self, packet, now: float | None = None) -> None:
        """A packet from the server's own TUN."""
        if now is not None:
            self.now = now
        if len(packet) >= 20 and packet[0] >> 4 == 4 and self.v2 is not None:
            if self.legacy is None or bytes(packet[16:20]) not in self.legacy.by_ip:
                if self._to_v2(packet):
                    return
        if self.legacy is not None:
            self.legacy.tun_packet(packet)

    # ------------------------------------------------------------- timers

    def next_deadline(self) -> float:
        t = [self.legacy.next_deadline()] if self.legacy is not None else []
        if self.v2 is not None:
            nt = self.v2.next_timer()
            if nt is not None:
                t.append(nt)
        return min(t) if t else self.now + 1.0

    def on_timer(self, now: float) -> None:
        self.now = now
        if self.legacy is not None:
            self.legacy.on_timer(now)
        if self.v2 is not None:
            self._actions(self.v2.on_timer(now), now)

    # ------------------------------------------------------ reload, close

    def reload(self, config, passphrase: bytes | None, now: float) -> None:
        self.config = config
        if self.legacy is not None:
            self.legacy.reload(config, codec.derive_key(passphrase)
                               if self.legacy.encrypt and passphrase else None)
        if self.v2 is not None:
            self._actions(self.v2.reload(self._key_store(passphrase, config),
                                         self.authorize, now), now)

    def close(self, now: float) -> None:
        """Tell v2 clients we are going, so they are back as soon as we are."""
        if self.v2 is not None:
            self._actions(self.v2.close(now), now)

    # ------------------------------------------------------------- status

    def status_clients(self, now: float) -> list:
        out = []
        if self.legacy is not None:
            for p in self.legacy.by_endpoint.values():
                out.append({
                    "client_id": p.client_id, "address": p.ip_text,
                    "endpoint": f"{p.endpoint[0]}:{p.endpoint[1]}",
                    "protocol": "legacy", "mode": p.mode,
                    "key": None if p.key is None else
                    ("global" if p.key.client_id is None else p.key.name),
                    "registered_ago": round(now - p.registered_at, 3),
                    "last_received_ago": round(now - p.last_rx, 3),
                    "rx_packets": p.rx_packets, "rx_bytes": p.rx_bytes,
                    "tx_packets": p.tx_packets, "tx_bytes": p.tx_bytes,
                })
        if self.v2 is not None:
            for p in self.v2.peers.values():
                s = p.current
                out.append({
                    "client_id": p.client_id or None, "address": str(p.grant.address),
                    "endpoint": f"{p.endpoint[0]}:{p.endpoint[1]}" if p.endpoint else None,
                    "protocol": "v2", "mode": "auto" if p.request.auto else "manual",
                    "key": "global" if self._key_name(p.client_id) == GLOBAL
                    else self._key_name(p.client_id),
                    "allowed": [str(n) for n in p.grant.allowed],
                    "registered_ago": round(now - s.created, 3) if s else None,
                    "last_received_ago": round(now - s.last_received, 3)
                    if s is not None and s.last_received > 0 else None,
                    "rx_packets": p.stats["rx"], "rx_bytes": None,
                    "tx_packets": p.stats["tx"], "tx_bytes": None,
                })
        return out

    def drops(self) -> dict:
        d = dict(self.legacy.drops) if self.legacy is not None else {}
        if self.v2 is not None:
            for k, v in self.v2.stats.items():
                if v and k not in ("handshakes", "cookie_sent"):
                    d[f"v2-{k}"] = v
        if self.refused_legacy:
            d["legacy-refused"] = self.refused_legacy
        return d

