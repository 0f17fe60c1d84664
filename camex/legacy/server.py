"""The legacy-protocol server, free of I/O.

Datagrams and a clock go in (`datagram_received`, `on_timer`); datagrams to
send come out in `outbox` as (bytes, endpoint) pairs. The event loop, the
socket and the configuration file are adapters around it.

What it keeps of the C server is the wire format; what it does not keep are
the flaws listed in docs/LEGACY.md §8:
- the route table is filled only by authenticated, replay-checked REGISTERs,
  never learnt from the inner source of DATA (flaw 1); DATA whose inner
  source is not the sender's tunnel address is dropped;
- REGISTER goes through the same replay window as DATA, and windows are kept
  per (key, sender prefix), so a replayed REGISTER from any endpoint changes
  nothing (flaw 2);
- a tunnel address and an auto client ID are bound to the key that owns them
  and a reload drops peers whose key is gone (flaw 3);
- an auto client gets its configured address at REGISTER time (flaw 4).
"""

from __future__ import annotations

import ipaddress
import os
from collections import Counter, OrderedDict
from typing import Any, Callable

from ..base.addrpolicy import AddressPolicy
from . import codec
from .codec import MAX_CLIENTS
from .seqfloor import SeqFloor
from ..base.endpoint import fmt
from ..base.log import LOG, Throttle, fault
from ..base.replay import ReplayWindow

IDLE_TIMEOUT = 120.0  # an entry silent this long expires (as the C server)
SWEEP_INTERVAL = 5.0
CONFIG_MIN_INTERVAL = 1.0  # answer at most this often per peer (CONFIG is larger than REGISTER)
# (key, sender prefix) windows remembered beyond live peers: about 320 bytes
# each, so a key holder inventing prefixes costs at most ~1.3 MiB.
REPLAY_STATE_MAX = 4096
GLOBAL = "*global*"
PLAIN_TAKEOVER_GUARD = 15.0  # plaintext: a live holder keeps its address this long


class KeyEntry:
    """One key of the key store: the global one or a [client ID]'s psk."""

    __slots__ = ("name", "client_id", "key", "aead")

    def __init__(self, name: str, client_id, key: bytes):
        self.name = name
        self.client_id = client_id  # lower-cased client ID, None for the global key
        self.key = key
        # cryptography only with a key (codec.new_aead): a plaintext server never loads it.
        self.aead = codec.new_aead(key)


class Peer:
    """A registered client: one endpoint, one tunnel address, one key."""

    __slots__ = ("endpoint", "ip", "ip_text", "client_id", "mode", "key",
                 "tx_prefix", "tx_seq", "rx_prefix", "rx_window", "last_rx",
                 "last_config", "registered_at", "last_register", "rx_packets",
                 "rx_bytes", "tx_packets", "tx_bytes", "since", "restored")

    def __init__(self, endpoint, ip: bytes, client_id, mode, key, tx_prefix, now, tx_seq=0):
        self.endpoint = endpoint
        self.ip = ip
        self.ip_text = str(ipaddress.IPv4Address(ip))
        self.client_id = client_id
        self.mode = mode
        self.key = key
        self.tx_prefix = tx_prefix
        self.tx_seq = tx_seq
        self.rx_prefix = None
        self.rx_window: ReplayWindow | None = None
        self.last_rx = now
        self.last_config = -1e9
        self.registered_at = now      # this entry's first REGISTER
        self.last_register = now      # its latest (a client repeats it)
        self.since = now  # connected since (kept when it moves to a new socket)
        self.restored = False  # came back from the state file
        self.rx_packets = self.rx_bytes = self.tx_packets = self.tx_bytes = 0

    @property
    def identity(self):
        """Who owns this entry: the key's name (encrypted) and the client ID."""
        return (self.key.name if self.key else None, self.client_id)

    def describe(self) -> str:
        who = f"{self.client_id} " if self.client_id else ""
        return f"{who}{self.ip_text} at {fmt(self.endpoint)}"


class LegacyServer:
    # (data, addr, now): _receive_encrypted or _receive_plain, chosen at
    # construction (one Python call less per datagram than a dispatch).
    datagram_received: Callable[[Any, Any, float], None]

    def __init__(self, *, encrypt: bool, global_key: bytes | None = None,
                 config=None, rng=os.urandom, idle_timeout: float = IDLE_TIMEOUT,
                 local_delivery: bool = False, max_clients: int = MAX_CLIENTS,
                 server_interfaces=(), seq_floor: SeqFloor | None = None):
        self.encrypt = encrypt
        # The server TUN's own address (-l of --server-tun): never a client's.
        self.server_interfaces = tuple(server_interfaces)
        self.policy = AddressPolicy()
        # Registrations refused by the address policy, by reason (status).
        self.refusals: Counter = Counter()
        # Send counters start above every value used before with any key
        # (the C client never resets its window: flaw 5).
        self.seq_floor = SeqFloor() if seq_floor is None else seq_floor
        # The bound counts the clients of both protocols: a server that also
        # speaks v2 sets `other_clients` to the number it holds.
        self.max_clients = max_clients
        self.other_clients = lambda: 0
        self.datagram_received = self._receive_encrypted if encrypt else self._receive_plain
        # With a server TUN (--server-tun), packets for no client go to the
        # server host's stack (itself, or networks routed behind it).
        self.local_delivery = local_delivery
        self.to_tun: list = []
        # Set by a server that also speaks v2 (camex.tunnel.server):
        # `foreign(packet) -> bool` takes packets for addresses that another
        # protocol's clients hold; `holder_elsewhere(ip4) -> identity | None`
        # says who holds an address there.
        self.foreign: Callable[[Any], bool] | None = None
        self.holder_elsewhere: Callable[[bytes], Any] | None = None
        self.rng = rng
        self.idle_timeout = idle_timeout
        self.by_endpoint: dict = {}
        self.by_ip: dict = {}
        self.by_prefix: dict = {}  # encrypted: sender prefix -> peer, for roaming
        self.outbox: list = []
        self.drops: Counter = Counter()
        # Rejections: one line per reason and source host every 10 s, and
        # at most ~2 a second over all of them (sources can be forged).
        self.throttle = Throttle(rate=2, burst=10)
        # Registrations: every one logged, but a key holder looping
        # REGISTERs gets at most ~15 lines a second.
        self.register_log = Throttle(interval=0, rate=15, burst=20)
        self._replay: OrderedDict = OrderedDict()
        self._next_sweep = 0.0
        self.config: Any = None
        self.keys: list = []
        self.reload(config, global_key)

    # ------------------------------------------------------------ keys

    def reload(self, config, global_key: bytes | None) -> None:
        """Install a new configuration and key store.

        Peers whose key left the store, or whose client section is gone,
        are dropped at once: a revoked passphrase stops working also for
        clients that are already connected.
        """
        keys = {}
        if self.encrypt and global_key:
            keys[GLOBAL] = KeyEntry(GLOBAL, None, global_key)
        if self.encrypt and config is not None:
            for cid, section in config.clients.items():
                if section.psk:
                    keys[cid] = KeyEntry(section.id, cid, codec.derive_key(section.psk))
        old = {k.name if k.client_id is None else k.client_id: k for k in self.keys}
        self.config = config
        self.policy = AddressPolicy.from_config(config, self.server_interfaces)
        self.server_packed = self.policy.server_packed   # (the relay's one lookup)
        self.keys = list(keys.values())
        self._key_by_id = keys
        for peer in list(self.by_endpoint.values()):
            reason = None
            if peer.key is not None:
                name = peer.key.client_id or GLOBAL
                new = keys.get(name)
                if new is None or new.key != peer.key.key:
                    reason = "its passphrase was removed or changed"
                else:
                    peer.key = new
            if reason is None and not self._still_allowed(peer):
                reason = "its configuration no longer allows it"
            if reason:
                LOG.info("dropping client %s: %s", peer.describe(), reason)
                self._remove(peer)
        if old.keys() != keys.keys():
            # Replay windows of removed keys are useless now.
            self._replay = OrderedDict((k, v) for k, v in self._replay.items()
                                       if k[0] in keys)

    def _still_allowed(self, peer) -> bool:
        if self._policy_refusal(peer.ip, peer.key, peer.client_id) is not None:
            return False
        if peer.mode == "manual":
            return self._authorise_manual_key(peer.key, peer.ip) is None
        prof = self.config.profile_for(peer.client_id) if self.config else None
        if prof is None or prof.local_cidr is None or prof.local_cidr.ip.packed != peer.ip:
            return False
        if self.encrypt:
            return self._required_key_name(peer.client_id) == peer.key.name
        return True

    # --------------------------------------------------------- receive

    def _drop(self, reason: str, addr=None, detail: str = "") -> None:
        self.drops[reason] += 1
        if reason in ("auth", "register-refused", "unknown-client", "malformed-control",
                      "server-full"):
            where = f" from {fmt(addr)}" if addr else ""
            self.throttle.warning((reason, addr[0] if addr else None),
                                  "rejected datagram%s: %s", where,
                                  detail or reason)

    def _receive_plain(self, data, addr, now) -> None:
        # IPv4 data starts 0x45: the byte test spares the call.
        if data and data[0] == 0x43 and codec.is_control(data):
            try:
                msg = codec.parse_control(data)
            except codec.CodecError as e:
                self._drop("malformed-control", addr, str(e))
                return
            self._handle_control(msg, addr, None, now)
            return
        peer = self.by_endpoint.get(addr)
        if peer is None:
            self.drops["unknown-endpoint"] += 1
            return
        peer.last_rx = now
        self._relay(data, peer)

    def _receive_encrypted(self, data, addr, now) -> None:
        try:
            hdr = codec.parse_header(data)
        except codec.CodecError:
            self.drops["malformed"] += 1
            return
        peer = self.by_endpoint.get(addr)
        key = None
        window = None
        plaintext = None
        if peer is not None:
            # One AEAD attempt with the key this endpoint registered with.
            if peer.rx_prefix == hdr.prefix:
                window = peer.rx_window
            else:
                window = self._replay.get((peer.key.client_id or GLOBAL, hdr.prefix))
            if window is not None and not window.check(hdr.seq):
                self.drops["replay"] += 1
                return
            try:
                plaintext = codec.open_datagram(peer.key.aead, data, hdr)
                key = peer.key
                if window is None:
                    window = self._window(key, hdr.prefix)
            except codec.InvalidTag:
                if hdr.type != codec.T_REGISTER:
                    self._drop("auth", addr, "no key opens it")
                    return
        if plaintext is None and peer is None and hdr.type == codec.T_DATA:
            self._roam(data, hdr, addr, now)
            return
        if plaintext is None:
            # Only a REGISTER may introduce an endpoint: nothing else from
            # an unknown endpoint could be routed, so it costs no trial.
            if hdr.type != codec.T_REGISTER:
                self.drops["unknown-endpoint"] += 1
                return
            replayed = False
            for cand in self.keys:
                # Peek only: junk must not create or evict replay state.
                w = self._replay.get((cand.client_id or GLOBAL, hdr.prefix))
                if w is not None and not w.check(hdr.seq):
                    replayed = True
                    continue
                try:
                    plaintext = codec.open_datagram(cand.aead, data, hdr)
                except codec.InvalidTag:
                    continue
                key, window = cand, w or self._window(cand, hdr.prefix)
                break
            else:
                if replayed:
                    self.drops["replay"] += 1
                else:
                    self._drop("auth", addr, "no key opens it (wrong passphrase?)")
                return
        window.update(hdr.seq)
        if hdr.type == codec.T_DATA:
            if peer is None or key is not peer.key:
                self.drops["unknown-endpoint"] += 1
                return
            peer.last_rx = now
            self._relay(plaintext, peer)
        elif hdr.type == codec.T_REGISTER:
            try:
                msg = codec.parse_control(plaintext)
            except codec.CodecError as e:
                self._drop("malformed-control", addr, str(e))
                return
            self._handle_control(msg, addr, key, now, hdr.prefix, window)
        else:
            self.drops["unexpected-type"] += 1

    def relay_batch(self, items, now: float, other) -> None:
        """Many datagrams from any senders at once: [(data, address, size)]
        as a batched receive gives them (`size` non-zero: a GRO read of
        several datagrams). Those it does not take go, in their place in
        the order, to `other(bytes, address, size, now)`: the one-datagram
        path (`datagram_received` and the daemon's GRO handling), so the
        result is that of handing every datagram over one by one.

        It takes the datagram a camera fleet sends all day: encrypted DATA
        from a registered endpoint on the sender prefix it registered with,
        relayed to another encrypted client. For those it does in one loop
        what _receive_encrypted, _relay and _send do (header checks, replay
        window checked before and moved after the one AEAD open, inner
        version, source and destination, the server's own addresses),
        without their calls, the Header tuple and the nonce assembly: the
        nonce is bytes 5..16 of the header, since the counter must equal the
        sequence field. A datagram it takes only in part (no route, a
        server address, another protocol's client) ends in _relay, whose
        answer is the same. `data` may be a view of a receive buffer: only
        what goes to `other` may outlive the call, and only as bytes.
        """
        if not self.encrypt:
            for d, a, s in items:
                other(bytes(d), a, s, now)
            return
        by_endpoint, by_ip, server_packed = self.by_endpoint, self.by_ip, self.server_packed
        outbox, drops = self.outbox, self.drops
        unpack, pack = codec.HEADER.unpack_from, codec.HEADER.pack
        magic, overhead, hlen = codec.MAGIC, codec.OVERHEAD_ENC, codec.HEADER_LEN
        T_DATA = codec.T_DATA
        for item in items:
            data, addr, size = item
            peer = by_endpoint.get(addr)
            n = len(data)
            if peer is None or size or n < overhead:
                other(bytes(data), addr, size, now)
                continue
            try:
                m, ptype, prefix, nseq, length, seq = unpack(data)
                if ptype != T_DATA or prefix != peer.rx_prefix or m != magic \
                        or nseq != seq or n != length + overhead:
                    other(bytes(data), addr, size, now)
                    continue
                w = peer.rx_window
                if w is None or peer.key is None:
                    other(bytes(data), addr, size, now)
                    continue
                top = w.top
                if seq <= top and (top - seq >= w.size or (w.bitmap >> (top - seq)) & 1):
                    drops["replay"] += 1
                    continue
                try:
                    packet = peer.key.aead.decrypt(data[5:17], data[hlen:], data[:hlen])
                except codec.InvalidTag:
                    self._drop("auth", addr, "no key opens it")
                    continue
                if seq > top:
                    shift = seq - top
                    w.bitmap = 1 if shift >= w.size else ((w.bitmap << shift) | 1) & w.mask
                    w.top = seq
                else:
                    w.bitmap |= 1 << (top - seq)
                peer.last_rx = now
                plen = len(packet)
                d = packet[16:20]
                dst = by_ip.get(d)
                if plen < 20 or packet[0] >> 4 != 4 or packet[12:16] != peer.ip \
                        or dst is None or dst is peer or dst.key is None \
                        or d in server_packed:
                    self._relay(packet, peer)   # its drop, or another way out
                    continue
                peer.rx_packets += 1
                peer.rx_bytes += plen
                key, tx_seq = dst.key, dst.tx_seq
                header = pack(magic, T_DATA, dst.tx_prefix, tx_seq, plen, tx_seq)
                dst.tx_seq = tx_seq + 1
                dst.tx_packets += 1
                dst.tx_bytes += plen
                outbox.append((header + key.aead.encrypt(header[5:17], packet, header),
                               dst.endpoint))
            except Exception as e:  # noqa: BLE001 - see log.fault
                fault(e, f"a datagram from {addr}")

    def _roam(self, data, hdr, addr, now) -> None:
        """DATA from an unknown endpoint: a registered client whose NAT
        mapping changed. Its sender prefix names the one candidate; it moves
        only after the datagram authenticated with that client's key and
        passed its replay window (the C server moved it before: flaw 1)."""
        peer = self.by_prefix.get(hdr.prefix)
        if peer is None or peer.rx_window is None:
            self.drops["unknown-endpoint"] += 1
            return
        if not peer.rx_window.check(hdr.seq):
            self.drops["replay"] += 1
            return
        try:
            plaintext = codec.open_datagram(peer.key.aead, data, hdr)
        except codec.InvalidTag:
            self.drops["unknown-endpoint"] += 1
            return
        peer.rx_window.update(hdr.seq)
        LOG.debug("client %s roamed to %s", peer.describe(), fmt(addr))
        if self.by_endpoint.get(peer.endpoint) is peer:
            del self.by_endpoint[peer.endpoint]
        old = self.by_endpoint.get(addr)
        if old is not None:
            self._remove(old)
        peer.endpoint = addr
        self.by_endpoint[addr] = peer
        peer.last_rx = now
        self._relay(plaintext, peer)

    def _window(self, key, prefix: bytes) -> ReplayWindow:
        """The replay window of (key, sender prefix), created if new; call
        only after the datagram authenticated."""
        rk = (key.client_id or GLOBAL, prefix)
        w = self._replay.get(rk)
        if w is None:
            w = ReplayWindow(64)
            self._replay[rk] = w
            if len(self._replay) > REPLAY_STATE_MAX:
                self._replay.popitem(last=False)
        else:
            self._replay.move_to_end(rk)
        return w

    # -------------------------------------------------------- register

    def _handle_control(self, msg, addr, key, now, prefix=None, window=None) -> None:
        if msg.verb != "REGISTER":
            self._drop("malformed-control", addr, f"unexpected {msg.verb}")
            return
        mode = msg.get("MODE", "MANUAL" if msg.bare else None)
        if mode == "MANUAL":
            ip_text = msg.get("LOCAL_IP") or (msg.bare[0] if msg.bare else None)
            try:
                ip = ipaddress.IPv4Address(ip_text)
            except (ipaddress.AddressValueError, ValueError):
                self._drop("malformed-control", addr, f"bad LOCAL_IP {ip_text!r}")
                return
            if ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
                self._drop("register-refused", addr, f"address {ip} cannot be a client")
                return
            refusal = self._authorise_manual_key(key, ip.packed) if self.encrypt else None
            client_id = None
            packed = ip.packed
        elif mode == "AUTO":
            client_id = msg.get("CLIENT_ID")
            if not client_id or len(client_id) > codec.MAX_CLIENT_ID_LEN:
                self._drop("malformed-control", addr, "bad CLIENT_ID")
                return
            prof = self.config.profile_for(client_id) if self.config else None
            if prof is None or prof.local_cidr is None:
                v6 = prof is not None and getattr(prof, "local_cidr6", None) is not None
                where = ""
                if v6:
                    sec = self.config.client(client_id)
                    where = f"{self.config.path}:{sec.line}: " if sec is not None else ""
                self._drop("unknown-client", addr,
                           f"{where}[client {client_id}] has only an IPv6 local_cidr; the "
                           f"legacy protocol carries IPv4 only" if v6 else
                           f"no address configured for client ID {client_id!r}")
                return
            refusal = None
            if self.encrypt:
                need = self._required_key_name(client_id)
                if need != key.name:
                    refusal = f"client ID {client_id} must use its own passphrase"
            packed = prof.local_cidr.ip.packed
        else:
            self._drop("malformed-control", addr, "REGISTER without a MODE")
            return
        if not refusal:
            denied = self._policy_refusal(packed, key, client_id)
            if denied is not None:
                self.refusals[denied.reason] += 1
                refusal = denied.message
        if refusal:
            self._drop("register-refused", addr, refusal)
            return
        identity = (key.name if key else None, client_id.lower() if client_id else None)
        if self.holder_elsewhere is not None:
            other = self.holder_elsewhere(packed)
            if other is not None and not self._same_client(other, identity):
                self._drop("register-refused", addr,
                           f"{ipaddress.IPv4Address(packed)} is in use by a v2 client")
                return
        holder = self.by_ip.get(packed)
        if holder is not None and holder.endpoint != addr:
            h_identity = (holder.identity[0],
                          holder.client_id.lower() if holder.client_id else None)
            alive = now - holder.last_rx < self.idle_timeout
            if h_identity != identity and alive:
                self._drop("register-refused", addr,
                           f"{holder.ip_text} is in use by another client")
                return
            if key is None and holder.endpoint[0] != addr[0] and \
                    now - holder.last_rx < PLAIN_TAKEOVER_GUARD:
                # Plaintext authenticates nothing; at least a client that is
                # talking right now keeps its address against other hosts.
                # A reconnect comes from the same host with a new port.
                self._drop("register-refused", addr,
                           f"{holder.ip_text} is in use by a live client at another address")
                return
        peer = self.by_endpoint.get(addr)
        if peer is not None and (peer.ip != packed or peer.identity[0] != identity[0]
                                 or (peer.client_id or "").lower() != (identity[1] or "")):
            self._remove(peer)
            peer = None
        if peer is None and holder is None and \
                len(self.by_endpoint) + self.other_clients() >= self.max_clients:
            # A client that moves or comes back replaces its entry; only a
            # new one is refused, and it retries as it would on loss.
            self._drop("server-full", addr, f"server full: {self.max_clients} clients "
                       "registered (--max-clients)")
            return
        if peer is None:
            peer = Peer(addr, packed, client_id, mode.lower(), key, self.rng(4), now,
                        self.seq_floor.start() if key is not None else 0)
            if holder is not None and holder.endpoint != addr:
                # The same client came back from a new socket (a legacy
                # client does that after 20 s without an answer): keep its
                # send counter, and how long it has been with us.
                if holder.identity[0] == identity[0]:
                    peer.tx_prefix, peer.tx_seq = holder.tx_prefix, holder.tx_seq
                    peer.since, peer.restored = holder.since, holder.restored
                LOG.debug("client %s moved to %s", holder.describe(), fmt(addr))
                self._remove(holder)
            else:
                self.register_log.info(addr, "client %s registered (%s%s)",
                                       peer.describe(), mode.lower(),
                                       ", key " + ("global" if key.client_id is None
                                                   else key.name) if key else "")
            self.by_endpoint[addr] = peer
            self.by_ip[packed] = peer
        if prefix is not None and peer.rx_prefix != prefix:
            if self.by_prefix.get(peer.rx_prefix) is peer:
                del self.by_prefix[peer.rx_prefix]
            peer.rx_prefix, peer.rx_window = prefix, window
            self.by_prefix[prefix] = peer
        peer.last_rx = peer.last_register = now
        if mode == "AUTO" and now - peer.last_config >= CONFIG_MIN_INTERVAL:
            peer.last_config = now
            self._send_config(peer, client_id)

    def _policy_refusal(self, packed: bytes, key, client_id):
        """The address policy's verdict on a claim (camex.base.addrpolicy). The
        client whose `allowed_cidr=` counts: an auto client's section (its
        address comes from there, checked with the file), else the section
        of the key (a global-key or plaintext manual claim has none)."""
        if client_id is not None:
            client = client_id.lower()
        else:
            client = key.client_id if key is not None else None
        return self.policy.check(ipaddress.ip_address(packed), client)

    @staticmethod
    def _same_client(other, identity) -> bool:
        """`other` = (key name, lower-cased client ID or None) of a client
        of another protocol: the same client if the IDs match, or, without
        IDs, if they hold the same key."""
        if other[1] is not None or identity[1] is not None:
            return other[1] == identity[1]
        return other[0] == identity[0]

    def identity_of(self, packed: bytes):
        """(key name, lower-cased client ID) of the live holder of an address."""
        peer = self.by_ip.get(packed)
        if peer is None:
            return None
        return (peer.key.name if peer.key else None,
                peer.client_id.lower() if peer.client_id else None)

    def evict(self, packed: bytes, why: str) -> None:
        """Forget the holder of an address (it came back over v2)."""
        peer = self.by_ip.get(packed)
        if peer is not None:
            LOG.info("client %s: %s", peer.describe(), why)
            self._remove(peer)

    def _required_key_name(self, client_id: str):
        section = self.config.client(client_id) if self.config else None
        if section is not None and section.psk:
            return section.id
        return GLOBAL if self.encrypt else None

    def _authorise_manual_key(self, key, packed: bytes):
        """None if `key` may hold the tunnel address, else why not."""
        if key is None:
            return None
        if self.config is None:
            return None if key.client_id is None else "unknown key"
        ip = ipaddress.IPv4Address(packed)
        if key.client_id is not None:
            prof = self.config.profile_for(key.client_id)
            if prof is not None and prof.local_cidr is not None and prof.local_cidr.ip != ip:
                return f"key of client {key.name} may not register {ip}"
        for cid, section in self.config.clients.items():
            if not section.psk or cid == key.client_id:
                continue
            prof = self.config.profile_for(cid)
            if prof is not None and prof.local_cidr is not None and prof.local_cidr.ip == ip:
                return f"{ip} belongs to client {section.id}"
        return None

    def _send_config(self, peer, client_id: str) -> None:
        prof = self.config.profile_for(client_id)
        text = codec.config_message(
            client_id, prof.mtu, str(prof.local_cidr),
            str(prof.gateway_ip) if prof.gateway_ip else None,
            [str(r) for r in prof.routes if r.version == 4])   # legacy: IPv4 inside
        self._send(peer, codec.T_CONFIG, text)

    # ----------------------------------------------------------- relay

    def _send(self, peer, ptype: int, payload) -> None:
        if peer.key is not None:
            out = codec.seal(peer.key.aead, ptype, peer.tx_prefix, peer.tx_seq, payload)
            peer.tx_seq += 1
        else:
            out = bytes(payload)
        peer.tx_packets += 1
        peer.tx_bytes += len(payload)
        self.outbox.append((out, peer.endpoint))

    def _relay(self, packet, src) -> None:
        src.rx_packets += 1
        src.rx_bytes += len(packet)
        if len(packet) < 20 or packet[0] >> 4 != 4:
            self.drops["not-ipv4"] += 1
            return
        if packet[12:16] != src.ip:
            self.drops["spoofed-source"] += 1
            return
        d = bytes(packet[16:20])
        dst = self.by_ip.get(d)
        if dst is not None and d in self.server_packed:
            dst = None     # the server's own address: whatever the table says
        if dst is None:
            if self.foreign is not None and self.foreign(packet):
                return
            if self.local_delivery:
                self.to_tun.append(packet)
            else:
                self.drops["no-route"] += 1
            return
        if dst is src:
            self.drops["no-route"] += 1
            return
        self._send(dst, codec.T_DATA, packet)

    def send_data(self, peer, packet) -> None:
        """Send an inner packet to a legacy client (from another protocol's
        client or the server TUN)."""
        self._send(peer, codec.T_DATA, packet)

    def tun_packet(self, packet) -> None:
        """A packet from the server's own TUN: to the client that holds its
        destination address."""
        if len(packet) < 20 or packet[0] >> 4 != 4:
            self.drops["not-ipv4"] += 1
            return
        d = bytes(packet[16:20])
        dst = self.by_ip.get(d)
        if dst is not None and d in self.server_packed:
            dst = None
        if dst is None:
            if self.foreign is None or not self.foreign(packet):
                self.drops["no-route"] += 1
            return
        self._send(dst, codec.T_DATA, packet)

    # ---------------------------------------------------------- timers

    def next_deadline(self) -> float:
        return self._next_sweep

    def on_timer(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        for peer in [p for p in self.by_endpoint.values()
                     if now - p.last_rx >= self.idle_timeout]:
            # Throttled like registrations: forged REGISTERs expire in bulk.
            self.register_log.info(peer.endpoint, "client %s expired after %.0f s of silence",
                                   peer.describe(), now - peer.last_rx)
            self._remove(peer)

    def _remove(self, peer) -> None:
        self.seq_floor.retire(peer.tx_seq)
        if self.by_endpoint.get(peer.endpoint) is peer:
            del self.by_endpoint[peer.endpoint]
        if self.by_ip.get(peer.ip) is peer:
            del self.by_ip[peer.ip]
        if self.by_prefix.get(peer.rx_prefix) is peer:
            del self.by_prefix[peer.rx_prefix]
        if peer.rx_window is not None and peer.key is not None:
            # Keep its window: a replay of its datagrams stays a replay.
            self._replay[(peer.key.client_id or GLOBAL, peer.rx_prefix)] = peer.rx_window
