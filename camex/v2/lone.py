"""Flat paths for a lone v2 DATA datagram (docs/FASTPATH.md §6) and for
the BULK frames of a steady TCP stream (§4, "A steady stream's frame in
one call per step").

After an idle sleep every distinct Python function costs 1.5-2 us cold, so
the per-packet cost of an idle tunnel is mostly the number of calls; under
a TCP stream the calls per frame were what camex spent above a naive
tunnel. The closures here do, in one function each, what the full paths of
camex.v2.client / camex.v2.server / camex.v2.session / camex.v2.core do
for the common case (the frame paths: client_frame, client_frame_receiver,
server_frame, server_frame_sealer, each described where it is defined):

- receive: a DATA datagram for the current session of an established
  peer, flags 0, from its known address, counter above the replay
  window's top, one IPv4 or IPv6 record inside (inner source allowed, on
  a server; IPv6 on a client once its TUN has an IPv6 address): decrypt
  with the cached cipher object, move the window, deliver;
- send: one IPv4 packet from the TUN (an IPv6 one too on a client whose
  TUN has an IPv6 address), or relayed from another client, for a
  confirmed session that needs no rekey yet: seal it under the next
  counter.

Anything else - handshakes, rekey or CLOSE flags, roaming, stale or
pending sessions, reordered counters, replays, forged tags, keepalives,
several records - goes to the full path unchanged (a forged tag is then
opened a second time there, to be counted: rare and cheap). The state they
touch is the full path's own, so the two may alternate freely.

What costs no more than the copy it replaces is shared with the full
paths: the replay window moves through its own class
(ReplayWindow.update). What would cost a call per datagram stays
inline (measured with bench/lone_micro.py: the inner-source check through
Peer.allows_source, +5 % per received datagram on a server; the replay
check through Session.fresh, +6 % on a client): the session's age and
message limits, the rekey limits on send, the inner-source check, and the
passive keepalive falling due (`_ack_later`: a call on every answered
datagram, the first one of an idle round trip). For
those, tests/unit/test_v2_lone_path.py drives both worlds through the same
sequences - limits by message count and by age, a previous session,
flags, roaming, BULK fragments, replays, forged tags, spoofed sources -
and requires the same answers.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag

from ..base.contract import SuperPacket
from ..base.netpkt import F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, VNET_HDR
from . import framing, wire
from .bulk import PROTO_TCP, _l4, segment_count, tun_items
from .framing import Run
from .wire import FEATURE_BULK
from .events import Deliver
from .session import AEADS

_UNPACK = wire._DATA_HDR.unpack_from
_PACK = wire._DATA_HDR.pack
_MIN = wire.DATA_MIN + 22         # one record of at least an IPv4 header
_ZERO4 = b"\x00\x00\x00\x00"
_T_MAX = wire.T_MAX


def client_receiver(core, slow=None):
    """datagram_received(d, now) for a camex.v2.core.V2ClientCore. A DATA
    datagram it does not take goes to the core's full path (never to
    `slow`, which would only look at it again); anything else to `slow`
    (the core's full path by default)."""
    cs = core.session
    t = cs.t
    full = core._datagram_received
    if slow is None:
        slow = full
    handle = core._handle
    cache = [None, None]          # recv key, its ChaCha20Poly1305

    def received(d, now):
        if len(d) >= _MIN and d[1] == 4 and d[0] == 0xC2:
            _, _, flags, _, receiver, counter = _UNPACK(d, 0)
            s = cs.current
            if s is not None and not flags and s.local_index == receiver \
                    and now - s.created < t.reject_after_time and counter < s.recv_limit \
                    and counter > s.window.top:
                key = s.recv_key
                if cache[0] is not key:
                    cache[0], cache[1] = key, AEADS.get(key)
                header = d[:16]
                try:
                    plain = cache[1].decrypt(_ZERO4 + counter.to_bytes(8, "little"),
                                             d[16:], header)
                except InvalidTag:
                    return full(d, now)   # counted there
                s.window.update(counter)
                s.last_received = now
                cs.first_unanswered = None
                n = len(plain)
                v = plain[2] >> 4
                if ((plain[0] << 8) | plain[1]) == n - 2 and (v == 4 or v == 6 and n >= 42 and (
                        core.config is not None and core.config.address6 is not None)):
                    p = plain[2:]
                    if cs.ack_due is None:   # ClientSession._ack_later inline
                        cs.ack_due = now + t.passive_keepalive
                    core.rx_packets += 1
                    core.rx_bytes += n - 2
                    core.to_tun.append(p)
                else:
                    out = []
                    cs._deliver(out, wire.parse_records(plain), Deliver, now)
                    handle(out)
                core.last_rx = now
                return
            return full(d, now)
        slow(d, now)

    return received


def client_sender(core):
    """tun_packet(packet, now) for a camex.v2.core.V2ClientCore."""
    cs = core.session
    t = cs.t
    slow = core._tun_packet
    cache = [None, None]          # send key, its ChaCha20Poly1305

    def tun_packet(p, now):
        s = cs.current
        n = len(p)
        v = p[0] >> 4 if n >= 20 else 0
        if s is not None and (v == 4 or v == 6 and n >= 40 and core.config is not None
                              and core.config.address6 is not None) and s.confirmed \
                and (core.config is not None or not core.auto):
            counter = s.send_counter
            age = now - s.created
            if counter + 1 < t.rekey_after_messages and counter < s.send_limit \
                    and age < t.rekey_after_time and age < t.reject_after_time:
                key = s.send_key
                if cache[0] is not key:
                    cache[0], cache[1] = key, AEADS.get(key)
                core.tx_packets += 1
                core.tx_bytes += n
                s.send_counter = counter + 1
                header = _PACK(0xC2, 4, 0, 0, s.remote_index, counter)
                s.last_sent = now
                core.to_net.append(header + cache[1].encrypt(
                    _ZERO4 + counter.to_bytes(8, "little"), n.to_bytes(2, "big") + p, header))
                cs.ack_due = None
                if cs.first_unanswered is None:
                    cs.first_unanswered = now
                return
        slow(p, now)

    return tun_packet


_HDR_PACK = wire._BULK_HDR.pack
_INDEX_AT, _INDEX_BYTES = framing.INDEX_AT, framing.INDEX_BYTES
_CUTS: dict = {}                  # (room, k) -> the struct cutting k pieces of room bytes


def _sealed(s, aead, plain, size: int, now: float) -> Run:
    """Session.seal_frame(plain, now, size) with flags 0 for the flat frame
    paths, the checks done by the caller (a confirmed session below its
    send limit, a plaintext within wire.bulk_max_plain(size)): `plain`
    sealed once under the next counter with `aead` (the session's send
    key's), then framing.glue_frame inline - the pieces cut by one struct
    call, joined with the header between them, the index bytes set."""
    counter = s.send_counter
    room = size - wire.HEADER_BULK
    count = -(-(len(plain) + wire.TAGLEN) // room)
    s.send_counter = counter + 1
    header = _HDR_PACK(0xC2, wire.T_BULK, 0, 0, s.remote_index, counter, count, 0, 0)
    s.last_sent = now
    body = aead.encrypt(_ZERO4 + counter.to_bytes(8, "little"), plain, header)
    k = count - 1
    cut = _CUTS.get((room, k))
    if cut is None:
        if len(_CUTS) >= 256:     # (sizes are a path's: few; bounded all the same)
            _CUTS.clear()
        cut = _CUTS[(room, k)] = framing.repeated_struct(f"{room}s", k)
    buf = bytearray(header).join((b"", *cut.unpack_from(body), memoryview(body)[k * room:]))
    buf[_INDEX_AT::size] = _INDEX_BYTES[count]
    return Run(buf, size)


def client_frame(core):
    """tun_frame(hdr, packet, now) -> bool for a camex.v2.core.V2ClientCore:
    a TSO read of a TCP super-packet (IPv4, or IPv6 with the TCP header
    right after its 40 bytes) sealed into ONE BULK frame (a
    framing.Run in `core.to_net`), as tun_super -> ClientSession.encrypt_frame
    -> Session.seal_frame would, in one Python call instead of about
    fifteen: the steady sender of a TCP stream. False, with nothing done,
    for anything else - no BULK session, one not confirmed, a frame that
    would reach a rekey limit, an auto client not configured yet, UDP, a
    header that does not add up - for the full path (tun_super)."""
    cs = core.session
    t = cs.t
    rec_pack = wire._BULK_REC.pack
    cache = [None, None]          # send key, its AEAD

    def tun_frame(hdr, p, now):
        g = hdr[3]
        n = len(p)
        s = cs.current
        gtype = hdr[1] & 0x7F
        if (gtype != GSO_TCPV4 and gtype != GSO_TCPV6) or not g or n > 0xFFFF \
                or n + 4 > cs.max_frame or s is None or not cs.peer_bulk or not s.confirmed \
                or (core.auto and core.config is None):
            return False
        # bulk.segment_count's sanity test, for TCP of the vnet header's family
        l4 = _l4(p)
        if l4 is None or l4[2] != PROTO_TCP or p[0] >> 4 != (4 if gtype == GSO_TCPV4 else 6):
            return False
        hl = l4[1]
        counter = s.send_counter
        age = now - s.created
        if counter + 1 >= t.rekey_after_messages or counter >= s.send_limit \
                or age >= t.rekey_after_time or age >= t.reject_after_time:
            return False
        key = s.send_key
        if cache[0] is not key:
            cache[0], cache[1] = key, AEADS.get(key)
        run = _sealed(s, cache[1], rec_pack(n, g) + p, cs.max_datagram, now)
        cs.stats["bulk_tx"] += 1
        cs.ack_due = None                 # ClientSession._sent inline
        if cs.first_unanswered is None:
            cs.first_unanswered = now
        core.tx_packets += -(-(n - hl) // g)
        core.tx_bytes += n
        core.to_net.append(run)
        return True

    return tun_frame


def server_receiver(core, slow=None, other=None):
    """datagram_received(d, addr, now) for a camex.v2.core.V2ServerCore. A
    DATA datagram it does not take goes to the core's full path (never to
    `slow`, which would only look at it again: a forged tag is opened
    twice, not three times); a datagram that is not v2 at all
    (wire.is_v2) to `other` where one is given (the legacy core of a
    server running both); anything else to `slow` (the core's full path
    by default). An IPv4 packet for a server address goes to the core's
    TUN queue (or is a no-route drop) here, as the core's relay would put
    it there."""
    # Here, not at the top: a client's lone path does without the server's
    # module. Bound once per receiver, a closure variable on the hot path.
    from .server import Peer

    server = core.server
    t = server.t
    sessions = server.sessions
    full = core._datagram_received
    if slow is None:
        slow = full
    relay = core._relay
    drops = core.drops
    handle = core._handle
    by_address = server.by_address
    cache = [None, None]          # the last recv key, its ChaCha20Poly1305

    def received(d, addr, now):
        if len(d) >= _MIN and d[1] == 4 and d[0] == 0xC2:
            _, _, flags, _, receiver, counter = _UNPACK(d, 0)
            peer = sessions.get(receiver)
            if type(peer) is Peer and not flags and addr == peer.endpoint:
                s = peer.current
                if s is not None and s.local_index == receiver and counter < s.recv_limit \
                        and now - s.created < t.reject_after_time and counter > s.window.top:
                    key = s.recv_key
                    if cache[0] is not key:
                        cache[0], cache[1] = key, AEADS.get(key)
                    aead = cache[1]
                    header = d[:16]
                    try:
                        plain = aead.decrypt(_ZERO4 + counter.to_bytes(8, "little"),
                                             d[16:], header)
                    except InvalidTag:
                        return full(d, addr, now)   # counted there
                    core.now = now
                    s.window.update(counter)
                    s.last_received = now
                    n = len(plain)
                    v = plain[2] >> 4
                    if ((plain[0] << 8) | plain[1]) == n - 2 and (v == 4 or v == 6 and n >= 42):
                        # Peer.allows_source inline, for either family
                        if v == 4:
                            src, allowed = int.from_bytes(plain[14:18], "big"), peer._allowed
                        else:
                            src, allowed = int.from_bytes(plain[10:26], "big"), peer._allowed6
                        for net, mask in allowed:
                            if src & mask == net:
                                st = peer.stats
                                st["rx"] += 1
                                st["rx_bytes"] += n - 2
                                if peer.ack_due is None:   # V2Server._ack_later inline
                                    a = peer.ack_due = now + t.passive_keepalive
                                    if peer.timer_at is None or a < peer.timer_at:
                                        server._arm(peer)
                                if v == 4 and int.from_bytes(plain[18:22], "big") \
                                        in server.reserved:
                                    # core._relay inline: route() says None
                                    # for a server address, no legacy client
                                    # holds one (relay_other says no).
                                    if core.local_delivery:
                                        core.to_tun.append(plain[2:])
                                    else:
                                        drops["no-route"] += 1
                                    return
                                if v == 4:
                                    # core._relay inline for the usual relay:
                                    # another v2 client's tunnel address
                                    # (route()'s first answer), sealed flat.
                                    dst = by_address.get(int.from_bytes(plain[18:22], "big"))
                                    if dst is not None and dst is not peer:
                                        seal = core.seal_lone
                                        if seal is not None and seal(dst, plain[2:], now):
                                            return
                                relay(plain[2:], peer, now)
                                return
                    handle(server._opened(peer, flags, plain, addr, now), now)
                    return
            return full(d, addr, now)
        if other is not None and not (len(d) >= 8 and d[0] == 0xC2 and 1 <= d[1] <= _T_MAX):
            return other(d, addr, now)    # (the mux's dispatch, inline)
        slow(d, addr, now)

    return received


def server_sealer(core):
    """seal(peer, packet, now) -> bool for a camex.v2.core.V2ServerCore:
    one IPv4 packet sealed for `peer` into the core's outbox, as
    V2Server.send() would for a lone packet; False (nothing done) when the
    session is not confirmed or needs a rekey flag, for the full path."""
    t = core.server.t
    cache = [None, None]          # the last send key, its ChaCha20Poly1305

    def seal(peer, p, now):
        s = peer.current
        if s is not None and s.confirmed:
            counter = s.send_counter
            age = now - s.created
            if counter < t.rekey_after_messages and counter < s.send_limit \
                    and age < t.reject_after_time \
                    and age < t.rekey_after_time + 2 * t.handshake_retry:
                key = s.send_key
                if cache[0] is not key:
                    cache[0], cache[1] = key, AEADS.get(key)
                n = len(p)
                peer.ack_due = None
                st = peer.stats
                st["tx"] += 1
                st["tx_bytes"] += n
                s.send_counter = counter + 1
                header = _PACK(0xC2, 4, 0, 0, s.remote_index, counter)
                s.last_sent = now
                core.outbox.append((header + cache[1].encrypt(
                    _ZERO4 + counter.to_bytes(8, "little"), n.to_bytes(2, "big") + p,
                    header), peer.endpoint))
                return True
        return False

    return seal


def server_sender(core, seal):
    """deliver(packet, now) -> bool for a camex.v2.core.V2ServerCore: an
    IPv4 packet to the v2 client owning its destination (`seal`, from
    server_sealer), else the full path."""
    server = core.server
    by_address = server.by_address
    slow = core._deliver

    def deliver(p, now):
        if len(p) >= 20 and p[0] >> 4 == 4:
            n = int.from_bytes(p[16:20], "big")
            peer = by_address.get(n)
            # Never a server address to a peer (route() says None for it).
            if peer is not None and n not in server.reserved and seal(peer, p, now):
                return True
        return slow(p, now)

    return deliver


def server_tun(core, seal):
    """tun_packet(packet, now=None) for a camex.v2.core.V2ServerCore: an
    IPv4 packet from the server's TUN to the v2 client owning its
    destination (server_sender's test, inline: one Python call fewer on
    an idle round trip), else the full delivery (`_deliver`, not
    `_tun_packet`, whose `deliver` would repeat that test) or a no-route
    drop."""
    server = core.server
    by_address = server.by_address
    full, drops = core._deliver, core.drops

    def tun_packet(p, now=None):
        if now is None:
            now = core.now
        if len(p) >= 20 and p[0] >> 4 == 4:
            n = int.from_bytes(p[16:20], "big")
            peer = by_address.get(n)
            if peer is not None and n not in server.reserved and seal(peer, p, now):
                return
        if not full(p, now):
            drops["no-route"] += 1

    return tun_packet


_BULK_UNPACK = wire._BULK_HDR.unpack_from
vnet_pack = VNET_HDR.pack
_HB = wire.HEADER_BULK


def server_frame_sealer(core):
    """seal_for(peer, plain, segments, now) -> bool for a
    camex.v2.core.V2ServerCore: a relayed frame's plaintext (one record, a
    TCP super-packet of `segments` segments) sealed again whole for `peer`
    into the core's outbox, as V2Server.send_frame(peer, records, now,
    plain) does it. False, with nothing done, when the peer does not take
    BULK, its session is not confirmed, is at a limit or needs the REKEY
    flag, or the frame does not fit its path: the full path then decides
    (it cuts, drops or flags as it always does)."""
    server = core.server
    t = server.t
    sstats = server.stats
    cache = [None, None]          # the last send key, its AEAD

    def seal_for(peer, plain, segments, now):
        s = peer.current
        if s is None or not peer.bulk or not server.features & FEATURE_BULK or not s.confirmed:
            return False
        counter = s.send_counter
        age = now - s.created
        if counter >= s.send_limit or counter >= t.rekey_after_messages \
                or age >= t.reject_after_time \
                or age >= t.rekey_after_time + 2 * t.handshake_retry:
            return False
        ep = peer.endpoint
        if ":" in ep[0]:
            _, max_frame, size = server.v6_sizes
        else:
            max_frame, size = server.max_frame, server.max_datagram
        if len(plain) > max_frame:
            return False
        key = s.send_key
        if cache[0] is not key:
            cache[0], cache[1] = key, AEADS.get(key)
        run = _sealed(s, cache[1], plain, size, now)
        peer.ack_due = None
        st = peer.stats
        st["tx"] += segments
        st["tx_bytes"] += len(plain) - 4
        st["bulk_tx"] += 1
        sstats["bulk_tx"] += 1
        # (Looked up here: a server running both protocols shares one
        # outbox between its halves, set after this core is made.)
        core.outbox.append((run, ep))
        return True

    return seal_for


def server_frame(core):
    """frame_received(first, ciphertext, addr, now) for a
    camex.v2.core.V2ServerCore: a whole BULK frame from one GRO read
    (bulk.FastReceiver.whole: `first` is its fragment 0, `ciphertext` its
    fragments' payloads gathered). The frames of a steady TCP stream take
    one Python call here instead of about twenty through the full path:
    the frame of an established peer, flags 0, from its known address,
    counter above the window's top, opened with the cached cipher object;
    then its one record (a source inside the peer's grant) to the server's
    TUN (IPv4) or to the destination's peer (the core's relay; a TCP
    stream of either family to another v2 client's tunnel address sealed
    again whole). A frame that does not open goes to the full path as it
    came (a forged tag is counted there); one that opens but is not that
    one record (several, a spoofed source) goes on from the open in the
    full path (V2Server._bulk_opened), as its window has moved."""
    from .server import V6, Peer

    server = core.server
    t = server.t
    sessions = server.sessions
    sstats = server.stats
    full = core._frame_received
    opened = server._bulk_opened
    handle = core._handle
    relay_frame = core._relay_frame
    drops = core.drops
    by_address = server.by_address
    seal_for = server_frame_sealer(core)
    cache = [None, None]          # the last recv key, its AEAD

    def frame(first, ciphertext, addr, now):
        _, _, flags, _, receiver, counter, count, r1, r2 = _BULK_UNPACK(first, 0)
        peer = sessions.get(receiver)
        if type(peer) is Peer and not flags and not r1 and not r2 and addr == peer.endpoint:
            s = peer.current
            if s is not None and s.local_index == receiver and counter < s.recv_limit \
                    and now - s.created < t.reject_after_time and counter > s.window.top:
                key = s.recv_key
                if cache[0] is not key:
                    cache[0], cache[1] = key, AEADS.get(key)
                try:
                    # Fragment 0's header (index 0, reserved bytes 0) is
                    # the frame's AD, as Session.open_frame rebuilds it.
                    plain = cache[1].decrypt(_ZERO4 + counter.to_bytes(8, "little"),
                                             ciphertext, bytes(first[:_HB]))
                except InvalidTag:
                    return full(first, ciphertext, addr, now)   # counted there
                core.now = now
                s.window.update(counter)
                s.last_received = now
                sstats["bulk_rx"] += 1
                n = len(plain)
                if n >= 24 and ((plain[0] << 8) | plain[1]) == n - 4:
                    # One record: Peer.allows_source inline, for either family.
                    v = plain[4] >> 4
                    if v == 4:
                        src, allowed = int.from_bytes(plain[16:20], "big"), peer._allowed
                    elif v == 6 and n >= 44:
                        src, allowed = int.from_bytes(plain[12:28], "big"), peer._allowed6
                    else:
                        allowed = ()
                    for net, mask in allowed:
                        if src & mask == net:
                            g = (plain[2] << 8) | plain[3]
                            p = memoryview(plain)[4:]
                            st = peer.stats
                            st["bulk_rx"] += 1
                            # The usual record: a sane TCP super-packet
                            # (its headers' lengths computed once, for the
                            # counters and the TUN write alike).
                            l4 = _l4(p) if g else None
                            tcp = l4 is not None and l4[2] == PROTO_TCP
                            if tcp:
                                ihl, hl, _ = l4
                            st["rx"] += -(-(n - 4 - hl) // g) if tcp else segment_count(g, p)
                            st["rx_bytes"] += n - 4
                            if peer.ack_due is None:   # V2Server._ack_later inline
                                a = peer.ack_due = now + t.passive_keepalive
                                if peer.timer_at is None or a < peer.timer_at:
                                    server._arm(peer)
                            if v == 6:
                                # route6()'s first answer, for the usual
                                # relay below (no client holds a server
                                # address: the address policy refuses
                                # them); a network behind a client or
                                # none: the full relay.
                                dst = by_address.get(int.from_bytes(plain[28:44], "big") | V6)
                            else:
                                d4 = int.from_bytes(plain[20:24], "big")
                                if d4 in server.reserved:
                                    # core._relay_frame inline: route() says
                                    # None for a server address, which no
                                    # legacy client holds.
                                    if not core.local_delivery:
                                        drops["no-route"] += 1
                                    elif tcp:            # bulk.tun_items inline
                                        core.to_tun.append(SuperPacket(vnet_pack(
                                            F_NEEDS_CSUM, GSO_TCPV4, hl, g, ihl, 16), p))
                                    else:
                                        core.to_tun.extend(tun_items(g, p))
                                    return
                                dst = by_address.get(d4)
                            # The usual relay: a TCP stream to another v2
                            # client, its frame sealed again whole.
                            if tcp and dst is not None and dst is not peer and seal_for(
                                    dst, plain, -(-(n - 4 - hl) // g), now):
                                return
                            relay_frame([(g, p)], peer, now, plain)
                            return
                handle(opened(peer, flags, plain, addr, now), now)
                return
        return full(first, ciphertext, addr, now)

    return frame


def client_frame_receiver(core):
    """frame_received(first, ciphertext, now) for a
    camex.v2.core.V2ClientCore: a whole BULK frame from one GRO read
    (bulk.FastReceiver.whole), as server_frame takes one on a server. The
    frames of a steady TCP stream from the server take one Python call
    here instead of about twenty through the full path: the current
    session's frame, flags 0, counter above the window's top, opened with
    the cached cipher object, its one record a TCP super-packet (IPv4, or
    IPv6 once the TUN has an IPv6 address), queued whole for the TUN. A
    frame that does not open goes to the full path as it came (a forged
    tag is counted there); one that opens but is not that record (a
    packet, several records, a header that does not add up) goes on from
    the open in the full path
    (ClientSession._bulk_opened), as its window has moved."""
    cs = core.session
    t = cs.t
    full = core._frame_received
    opened = cs._bulk_opened
    handle = core._handle
    cache = [None, None]          # the last recv key, its AEAD

    def frame(first, ciphertext, now):
        _, _, flags, _, receiver, counter, _, r1, r2 = _BULK_UNPACK(first, 0)
        s = cs.current
        if s is not None and not flags and not r1 and not r2 and s.local_index == receiver \
                and now - s.created < t.reject_after_time and counter < s.recv_limit \
                and counter > s.window.top:
            key = s.recv_key
            if cache[0] is not key:
                cache[0], cache[1] = key, AEADS.get(key)
            try:
                # Fragment 0's header is the AD, as Session.open_frame
                # rebuilds it (index 0 and reserved bytes 0 checked).
                plain = cache[1].decrypt(_ZERO4 + counter.to_bytes(8, "little"),
                                         ciphertext, bytes(first[:_HB]))
            except InvalidTag:
                return full(first, ciphertext, now)   # counted there
            s.window.update(counter)
            s.last_received = now
            cs.stats["bulk_rx"] += 1
            cs.first_unanswered = None         # ClientSession._authenticated, flags 0
            core.last_rx = now
            n = len(plain)
            v = plain[4] >> 4 if n >= 24 else 0
            # One record, IPv4 or (once the TUN has an IPv6 address, as the
            # core's DeliverFrame asks) IPv6: a sane TCP super-packet?
            if (v == 4 or v == 6 and core.config is not None and core.config.address6 is not None) \
                    and ((plain[0] << 8) | plain[1]) == n - 4:
                g = (plain[2] << 8) | plain[3]
                p = memoryview(plain)[4:]
                l4 = _l4(p) if g else None
                if l4 is not None and l4[2] == PROTO_TCP:
                    ihl, hl, _ = l4
                    if cs.ack_due is None:     # ClientSession._ack_later inline
                        cs.ack_due = now + t.passive_keepalive
                    core.rx_packets += -(-(n - 4 - hl) // g)
                    core.rx_bytes += n - 4
                    core.to_tun.append(SuperPacket(vnet_pack(
                        F_NEEDS_CSUM, GSO_TCPV4 if v == 4 else GSO_TCPV6, hl, g, ihl, 16), p))
                    return
            handle(opened(0, plain, now))
            return
        full(first, ciphertext, now)

    return frame
