"""A server that speaks both protocols on one UDP port, free of I/O.

The first bytes of a datagram say which protocol it belongs to (a v2
datagram starts with 0xC2 and a type 1..5; legacy ones start with "CX2P" or
an IPv4 header), so one socket serves legacy clients (LegacyServer) and v2
clients (V2Server). Both share one address space: a packet from any client
is relayed to whichever client holds its destination, over that client's
protocol, or to the server's own TUN.

The v2 half is camex.v2.core.V2ServerCore with the cross-protocol policy
of camex.tunnel.server_v2, imported only when v2 is on: v2 needs
`cryptography`, which a plaintext legacy server never loads (6.6 MiB of
resident memory). With `lazy_v2`, a server that speaks both protocols
imports and builds it only when the first v2 datagram comes (or a state
file names v2 clients): a fleet of legacy cameras never needs it (~0.45
MiB of a legacy relay's resident memory). The passphrases' scrypt still
runs at start. Inputs and outputs are those of LegacyServer:
`datagram_received`, `tun_packet`, `on_timer`; `outbox` (datagram, endpoint)
and `to_tun`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

from ..base.contract import DatagramReceiver, PlainReceiver
from ..legacy import codec
from ..base.endpoint import fmt, outer_ip_udp
from ..base.log import LOG, Throttle
from ..v2 import bulk, wire  # neither loads cryptography (is_v2; cutting TSO reads)
from ..legacy.ifconfig import PATH_MTU
from ..legacy.server import GLOBAL, MAX_CLIENTS, LegacyServer

# The v2 server's counters that count work done, not datagrams refused:
# left out of drops() (frames relayed are not losses).
_V2_NOT_DROPS = frozenset(("handshakes", "cookie_sent", "bulk_rx", "bulk_tx"))

if TYPE_CHECKING:
    from ..v2.session import Timers
    from .server_v2 import V2Half

_MARK, _T_MAX = wire.MARK, wire.T_MAX   # what wire.is_v2 checks
# The v2 server's datagram size (camex.v2.core.max_datagram(), IPv4), for
# the TSO limit of a server whose v2 half has not started yet.
_V2_DATAGRAM = PATH_MTU - outer_ip_udp(False)


class _NoFrames:
    """The BULK fast path's reassembly before the v2 half exists: nothing
    started, so every datagram takes the full path."""

    last = None


class ServerMux:
    """The server core of the daemon (camex.base.contract.ServerCore)."""

    datagram_received: DatagramReceiver

    def __init__(self, *, passphrase: bytes | None, encrypt: bool, config=None,
                 legacy: bool = True, v2: bool = True, local_delivery: bool = False,
                 timers: Timers | None = None, rng=os.urandom, keylog=None,
                 max_clients: int = MAX_CLIENTS, server_interfaces=(),
                 lazy_v2: bool = False, make_timers=None, aes: bool = False):
        # `lazy_v2` (with legacy on): the v2 half waits for its first datagram;
        # `make_timers()`, if given, makes its timers then (instead of `timers`).
        self.config = config
        self.outbox: list = []
        self.to_tun: list = []
        self.throttle = Throttle()
        self.refused_legacy = 0
        self.legacy: LegacyServer | None = None
        if legacy:
            self.legacy = LegacyServer(
                encrypt=encrypt, global_key=codec.derive_key(passphrase) if encrypt else None,
                config=config, rng=rng, local_delivery=local_delivery,
                max_clients=max_clients, server_interfaces=server_interfaces)
            self.legacy.outbox = self.outbox
            self.legacy.to_tun = self.to_tun
        self.v2: V2Half | None = None
        self._v2_kw: dict | None = None   # the v2 half's arguments, while it waits (lazy_v2)
        if v2:
            kw = dict(global_passphrase=passphrase, config=config,
                      local_delivery=local_delivery, rng=rng, keylog=keylog, timers=timers,
                      max_clients=max_clients, server_interfaces=server_interfaces, aes=aes)
            if lazy_v2 and self.legacy is not None:
                from ..v2 import kdf
                # scrypt now (in its helper, at start), not on a v2 datagram.
                kw["keys"] = kdf.server_keys(passphrase, config)
                kw["make_timers"] = make_timers
                self._v2_kw = kw
                # The BULK fast path in front as below, its reassembly the
                # v2 half's once it starts (_start_v2).
                self._fast = bulk.FastReceiver(_NoFrames, self._datagram_received,
                                               self._first_frame)
                # Until then no fast path applies: a datagram read alone goes
                # to the dispatch (which starts the half on a v2 one).
                self._fast.one = self._datagram_received
                self.datagram_received = self._fast
            else:
                if make_timers is not None:
                    kw["timers"] = make_timers()
                half = self._start_v2(kw)
                # The middle fragments of a v2 BULK frame are stored before any
                # other dispatch: most datagrams of a bulk transfer are those.
                fast = bulk.FastReceiver(half.server.frames, self._datagram_received,
                                         half.frame_received)
                self._lone_first(fast)
                self.datagram_received = fast
        else:
            self.datagram_received = PlainReceiver(self._datagram_received)
        # No dispatch to pay for where one protocol runs.
        self.tun_packet: Callable[..., None] = (
            self.v2.tun_packet if self.legacy is None and self.v2 is not None
            else self._tun_packet)

    def _start_v2(self, kw: dict) -> V2Half:
        from .server_v2 import V2Half
        self.v2 = V2Half(self, relay_other=self._to_legacy, **kw)
        self.v2.outbox = self.outbox
        self.v2.to_tun = self.to_tun
        self.v2.other_holds = self._legacy_holds
        if self.legacy is not None:
            self.legacy.foreign = self._to_v2
            self.legacy.holder_elsewhere = self._v2_identity_at
            # --max-clients bounds both protocols' clients together.
            v2_peers, legacy_peers = self.v2.server.peers, self.legacy.by_endpoint
            self.legacy.other_clients = lambda: len(v2_peers)
            self.v2.server.other_peers = lambda: len(legacy_peers)
        return self.v2

    def start_v2(self) -> bool:
        """Start the v2 half if it waits (lazy_v2); True if v2 is on."""
        kw = self._v2_kw
        if kw is not None:
            self._v2_kw = None
            make_timers = kw.pop("make_timers")
            if make_timers is not None:
                kw["timers"] = make_timers()
            self._start_v2(kw)
            LOG.info("protocol v2: the server's v2 half started (a v2 client came)")
            # The same receiver object (a daemon keeps it), now the v2 half's.
            fast = self._fast
            fast.frames = self.v2.server.frames
            fast.frame = self.v2.frame_received
            self._lone_first(fast)
        return self.v2 is not None

    def _lone_first(self, fast) -> None:
        """`fast.one` (a datagram read alone): v2's flat receive in front of
        the BULK fast path and this dispatch (a lone v2 DATA datagram: one
        Python call), a legacy datagram straight to the legacy core."""
        if self.v2 is not None and self.v2.flat:
            from ..v2 import lone
            fast.one = lone.server_receiver(
                self.v2, fast.__call__,
                self.legacy.datagram_received if self.legacy is not None else None)

    def _first_frame(self, first, ciphertext, addr, now: float) -> None:
        """A whole BULK frame before the v2 half started (lazy_v2)."""
        self.start_v2()
        self.v2.frame_received(first, ciphertext, addr, now)

    # ------------------------------------------------------------ policy

    def key_name(self, client_id: str | None) -> str:
        section = self.config.client(client_id) if self.config and client_id else None
        return section.id if section is not None and section.psk else GLOBAL

    def pinned_owner(self, ip) -> str | None:
        """The client section whose profile pins this address, if any."""
        if self.config is None:
            return None
        for cid in self.config.clients:
            prof = self.config.profile_for(cid)
            local = prof.local_cidr6 if ip.version == 6 else prof.local_cidr
            if local is not None and local.ip == ip:
                return cid
        return None

    def _v2_identity_at(self, packed: bytes):
        peer = self.v2.server.by_address.get(int.from_bytes(packed, "big"))
        if peer is None:
            return None
        cid = peer.client_id.lower() if peer.client_id else None
        return (self.key_name(peer.client_id), cid)

    # ------------------------------------------------- receive and route

    def _datagram_received(self, data, addr, now: float) -> None:
        # wire.is_v2 inlined: two Python calls fewer per datagram, which on
        # an idle tunnel run cold after every wake-up (docs/FASTPATH.md).
        if len(data) >= 8 and data[0] == _MARK and 1 <= data[1] <= _T_MAX:
            if self.v2 is None and not self.start_v2():
                self.throttle.warning("v2-off", "ignored v2 datagrams from %s: this "
                                      "server runs the legacy protocol only", fmt(addr))
                return
            # Past the fast path for BULK middle fragments (this mux's own,
            # in front): the v2 core's would only check them again.
            self.v2.receive_whole(data, addr, now)
        elif self.legacy is not None:
            self.legacy.datagram_received(data, addr, now)
        else:
            self.refused_legacy += 1
            self.throttle.warning("legacy-off", "refused legacy-protocol datagrams from "
                                  "%s (--no-legacy)", fmt(addr))

    def datagrams_received(self, items, now: float, other) -> None:
        """A batched receive, [(data, address, GRO size)] from any senders:
        the legacy relay takes what it can in one loop
        (LegacyServer.relay_batch); every other datagram goes, as bytes and
        in its place, to `other(data, address, size, now)` (the daemon's
        way into `datagram_received`)."""
        if self.legacy is None:
            for d, a, s in items:
                other(bytes(d), a, s, now)
            return
        self.legacy.relay_batch(items, now, other)

    def _to_legacy(self, packet) -> bool:
        """A v2 client's packet for an address no v2 client holds."""
        legacy = self.legacy
        if legacy is None:
            return False
        d = bytes(packet[16:20])
        peer = legacy.by_ip.get(d)
        if peer is None or d in legacy.server_packed:
            return False      # (a server address: the server's, whatever the table says)
        self.legacy.send_data(peer, packet)
        return True

    def _legacy_holds(self, dst: bytes) -> bool:
        return self.legacy is not None and dst in self.legacy.by_ip

    def _to_v2(self, packet) -> bool:
        """A legacy client's packet for an address no legacy client holds."""
        return self.v2.deliver(packet, self.v2.now)

    @property
    def bulk_ready(self) -> bool:
        """Daemon hook: TSO on the server TUN while a v2 client takes BULK."""
        return self.v2 is not None and self.v2.bulk_ready

    def tso_max(self) -> int | None:
        """Daemon hook: the server TUN's TSO size limit (v2 BULK), or None."""
        if self.v2 is None:
            return wire.bulk_tso_max(_V2_DATAGRAM) if self._v2_kw is not None else None
        return self.v2.tso_max()

    def tun_super(self, hdr, packet, now: float | None = None) -> None:
        """A TSO read of the server's TUN: one BULK frame to a v2 client
        that takes them, else cut into packets for whoever holds the
        destination (legacy gets one packet per datagram, full checksums)."""
        if self.v2 is not None and self.v2.tun_super(hdr, packet, now):
            return
        rec = bulk.record_of(hdr, packet)
        for p in bulk.segments(rec[0], packet) if rec is not None else ():
            self.tun_packet(p, now)

    def _tun_packet(self, packet, now: float | None = None) -> None:
        """A packet from the server's own TUN, to whichever client holds
        its destination (`tun_packet`: this, or v2's own where the server
        runs v2 only)."""
        if self.legacy is not None and (self.v2 is None or not packet
                                        or packet[0] >> 4 != 6):
            self.legacy.tun_packet(packet)  # tries v2 through `foreign`
        else:
            self.v2.tun_packet(packet, now)  # IPv6: v2 clients only

    # ------------------------------------------------------------- timers

    def next_deadline(self) -> float:
        # Asked after every wake-up: no list or comprehension frame.
        legacy, v2 = self.legacy, self.v2
        if v2 is None:
            return legacy.next_deadline()
        t = v2.next_deadline()
        if legacy is None:
            return t
        u = legacy.next_deadline()
        return u if u < t else t

    def on_timer(self, now: float) -> None:
        for c in (self.legacy, self.v2):
            if c is not None:
                c.on_timer(now)

    # ------------------------------------------------------ reload, close

    def reload(self, config, passphrase: bytes | None, now: float) -> None:
        self.config = config
        if self.legacy is not None:
            self.legacy.reload(config, codec.derive_key(passphrase)
                               if self.legacy.encrypt and passphrase else None)
        if self.v2 is not None:
            self.v2.reload(config, passphrase, now)
        elif self._v2_kw is not None:
            from ..v2 import kdf
            self._v2_kw.update(config=config, global_passphrase=passphrase,
                               keys=kdf.server_keys(passphrase, config))

    def close(self, now: float) -> None:
        """Tell v2 clients we are going, so they are back as soon as we are."""
        if self.v2 is not None:
            self.v2.close(now)

    # ------------------------------------------------------------- status

    def status_clients(self, now: float) -> list:
        out = []
        if self.legacy is not None:
            for p in self.legacy.by_endpoint.values():
                out.append({
                    "client_id": p.client_id, "address": p.ip_text,
                    "endpoint": fmt(p.endpoint),
                    "protocol": "legacy", "mode": p.mode,
                    "key": None if p.key is None else
                    ("global" if p.key.client_id is None else p.key.name),
                    "registered_ago": round(now - p.registered_at, 3),
                    "last_register_ago": round(now - p.last_register, 3),
                    "connected_for": round(now - p.since, 3), "restored": p.restored,
                    "last_received_ago": round(now - p.last_rx, 3),
                    "rx_packets": p.rx_packets, "rx_bytes": p.rx_bytes,
                    "tx_packets": p.tx_packets, "tx_bytes": p.tx_bytes,
                })
        if self.v2 is not None:
            for entry in self.v2.status(now):
                name = self.key_name(entry["client_id"])
                entry.setdefault("key", "global" if name == GLOBAL else name)
                entry.setdefault("registered_ago", entry.get("session_age"))
                out.append(entry)
        return out

    def refusals(self) -> dict:
        """Registrations refused by the address policy (camex.base.addrpolicy),
        by reason, both protocols together."""
        out: dict = {}
        for c in (self.legacy, self.v2):
            if c is not None:
                for k, v in c.refusals.items():
                    out[k] = out.get(k, 0) + v
        return out

    def v2_counters(self) -> dict:
        """v2 handshakes done and cookies sent under load (None without v2)."""
        if self._v2_kw is not None:    # on, not started: none yet
            return {"v2_cookies_sent": 0, "v2_handshakes": 0}
        stats = self.v2.server.stats if self.v2 is not None else None
        return {"v2_cookies_sent": stats["cookie_sent"] if stats else None,
                "v2_handshakes": stats["handshakes"] if stats else None}

    def drops(self) -> dict:
        d = dict(self.legacy.drops) if self.legacy is not None else {}
        if self.v2 is not None:
            for k, v in self.v2.drops.items():
                d[f"v2-{k}"] = d.get(f"v2-{k}", 0) + v
            for k, v in self.v2.server.stats.items():
                if v and k not in _V2_NOT_DROPS:
                    d[f"v2-{k}"] = v
        if self.refused_legacy:
            d["legacy-refused"] = self.refused_legacy
        return d
