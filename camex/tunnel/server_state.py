"""What a legacy server must remember across a restart, as plain data.

`snapshot` turns the live state of a LegacyServer into dicts, lists, strings
and ints; `restore` puts such a snapshot back, entry by entry, checking each
against what the server would allow now. Free of I/O: the clocks come in
as arguments, the state file (its encoding, integrity check and atomic
writes) is camex.daemon.statefile, on the daemon's side.

Kept: every registered client (endpoint, tunnel address, client ID, mode,
key name, send prefix, receive prefix and window, since when, idle time),
the replay windows of retired (key, prefix) pairs, and the high-water mark
of the send counters. No key, no passphrase: keys are named (the global
key, or a client section's ID), the daemon finds them in its key store.
"""

from __future__ import annotations

import ipaddress
from operator import attrgetter

from ..base.endpoint import canonical

from ..legacy.codec import MAX_CLIENT_ID_LEN
from ..base.replay import ReplayWindow
from ..legacy.server import GLOBAL, REPLAY_STATE_MAX, Peer

U64 = 1 << 64


def key_name(key) -> str | None:
    return None if key is None else (key.client_id or GLOBAL)


def v2_snapshot(v2server) -> list:
    """[address, port, index] of each v2 client's current session: no key
    (those die with the process), only where to send a NOSESSION so that
    the client handshakes again at once, even if it is idle."""
    out = []
    for p in v2server.peers.values():
        if p.endpoint is not None and p.current is not None:
            out.append([p.endpoint[0], p.endpoint[1], p.current.local_index])
    return out


def v2_hints(entries) -> tuple[list, int]:
    """(NOSESSION datagrams as (bytes, endpoint), entries ignored) for the
    v2 clients a predecessor served: the client checks the index against
    its session and handshakes early (docs/PROTOCOL.md, NOSESSION)."""
    from ..v2 import wire

    out, bad = [], 0
    for e in entries if type(entries) is list else []:
        try:
            host, port, index = e
            ipaddress.IPv4Address(host)
            if type(port) is not int or not 0 < port < 65536 or type(index) is not int \
                    or not 0 <= index < 1 << 32:
                raise ValueError
        except (TypeError, ValueError):
            bad += 1
            continue
        out.append((wire.pack_nosession(index), (host, port)))
    return out, bad


def _window(w) -> list | None:
    return None if w is None else [w.top, w.bitmap]


def snapshot(server, now: float) -> dict:
    """The server's state at `now` (its monotonic clock). Times are saved
    as durations (idle for, connected for), never as wall-clock times: the
    successor's wall clock may be anywhere."""
    peers, live = [], set()
    for p in server.by_endpoint.values():
        live.add(id(p.rx_window))
        peers.append({
            "endpoint": [p.endpoint[0], p.endpoint[1]], "ip": p.ip_text,
            "client_id": p.client_id, "mode": p.mode, "key": key_name(p.key),
            "tx_prefix": p.tx_prefix.hex(),
            "rx_prefix": p.rx_prefix.hex() if p.rx_prefix is not None else None,
            "rx_window": _window(p.rx_window),
            "connected_for": round(max(0.0, now - p.since), 3),
            "idle": round(max(0.0, now - p.last_rx), 3),
        })
    windows = [{"key": k, "prefix": prefix.hex(), "window": _window(w)}
               for (k, prefix), w in server._replay.items() if id(w) not in live]
    return {"seq_high_water": server.seq_floor.high_water(
                p.tx_seq for p in server.by_endpoint.values()),
            "peers": peers, "windows": windows}


# What a peer's entry is made of, its times as the instants they stand for
# (snapshot turns them into durations at the time of the save).
_PEER_FIELDS = attrgetter("endpoint", "ip_text", "client_id", "mode", "key", "tx_prefix",
                          "rx_prefix", "since", "last_rx")
_WINDOW_FIELDS = attrgetter("top", "bitmap")


def fingerprint(server) -> tuple:
    """Everything `snapshot` keeps, as comparable values, with the two
    durations as the instants they are measured from: equal fingerprints
    mean equal files but for `now`, and a file's age is added back to its
    durations at restore, so such a file need not be written again. About
    a third of a snapshot's cost (C-level attribute reads, no dicts)."""
    peers = server.by_endpoint.values()
    return (server.seq_floor.high_water(p.tx_seq for p in peers),
            [(_PEER_FIELDS(p), None if p.rx_window is None else _WINDOW_FIELDS(p.rx_window))
             for p in peers],
            [(k, _WINDOW_FIELDS(w)) for k, w in server._replay.items()])


class Invalid(ValueError):
    """An entry that cannot be restored; the message says why."""


def _hexbytes(v, n: int, what: str) -> bytes:
    if type(v) is not str or len(v) != 2 * n:
        raise Invalid(f"bad {what}")
    try:
        return bytes.fromhex(v)
    except ValueError:
        raise Invalid(f"bad {what}") from None


def _parse_window(v) -> ReplayWindow:
    if type(v) is not list or len(v) != 2 or any(type(x) is not int for x in v) \
            or not -1 <= v[0] < U64 or not 0 <= v[1] < U64:
        raise Invalid("bad replay window")
    w = ReplayWindow(64)
    w.top, w.bitmap = v
    return w


def _number(v, what: str) -> float:
    if type(v) not in (int, float) or v != v or v in (float("inf"), float("-inf")):
        raise Invalid(f"bad {what}")
    return float(v)


def _key(server, name):
    """The key store's entry for a saved key name, or why there is none."""
    if not server.encrypt:
        if name is not None:
            raise Invalid("it names a key but this server is plaintext")
        return None
    if type(name) is not str:
        raise Invalid("no key (this server is encrypted)")
    key = server._key_by_id.get(name)
    if key is None:
        raise Invalid(f"key {name!r} is no longer in the configuration")
    return key


def _peer(server, e, now: float, age: float) -> Peer:
    if type(e) is not dict:
        raise Invalid("not an entry")
    ep = e.get("endpoint")
    if type(ep) is not list or len(ep) != 2 or type(ep[0]) is not str \
            or type(ep[1]) is not int or not 0 < ep[1] < 65536:
        raise Invalid("bad endpoint")
    if type(e.get("ip")) is not str:   # (IPv4Address takes ints too)
        raise Invalid("bad address")
    try:
        if ipaddress.ip_address(ep[0]).version == 6 and canonical(ep)[0] != ep[0]:
            # Never written: endpoints are canonical (an IPv4 peer unmapped).
            raise ValueError("not a canonical endpoint")
        ip = ipaddress.IPv4Address(e.get("ip"))
    except (ipaddress.AddressValueError, ValueError):
        raise Invalid("bad address") from None
    mode, cid = e.get("mode"), e.get("client_id")
    if mode not in ("manual", "auto"):
        raise Invalid("bad mode")
    # An auto client has an ID; a manual REGISTER carries none.
    if (mode == "manual" and cid is not None) or (mode == "auto" and (
            type(cid) is not str or not 0 < len(cid) <= MAX_CLIENT_ID_LEN)):
        raise Invalid("bad client ID")
    key = _key(server, e.get("key"))
    idle = _number(e.get("idle"), "idle time") + age
    if idle >= server.idle_timeout:
        raise Invalid(f"silent for {idle:.0f} s, past the idle timeout")
    connected = _number(e.get("connected_for"), "connection time")
    rx_prefix = e.get("rx_prefix")
    window: ReplayWindow | None = None
    if key is not None and rx_prefix is not None:
        rx_prefix = _hexbytes(rx_prefix, 4, "receive prefix")
        window = _parse_window(e.get("rx_window"))
    elif rx_prefix is not None or e.get("rx_window") is not None:
        raise Invalid("a receive window without a key")
    peer = Peer((ep[0], ep[1]), ip.packed, cid, mode, key,
                _hexbytes(e.get("tx_prefix"), 4, "send prefix"), now,
                server.seq_floor.start() if key is not None else 0)
    peer.rx_prefix, peer.rx_window = rx_prefix, window
    peer.last_rx = now - idle
    peer.since = now - max(0.0, connected) - age
    peer.restored = True
    return peer


def _list(state: dict, field: str, ignored: list) -> list:
    v = state.get(field)
    if type(v) is list:
        return v
    if v is not None:
        ignored.append(f"{field}: not a list")
    return []


def restore(server, state, now: float, age: float) -> tuple[int, list]:
    """Put a snapshot back. `age`: seconds since it was saved. Returns (clients restored, [why each ignored
    entry was ignored]); an entry the key store or the configuration would
    not allow now is ignored, never installed."""
    ignored = []
    if type(state) is not dict:
        return 0, ["not a server state"]
    hw = state.get("seq_high_water")
    if hw is not None and not server.seq_floor.restore(hw):
        ignored.append("the counter high-water mark is out of range")
    for e in _list(state, "windows", ignored):
        try:
            if type(e) is not dict:
                raise Invalid("not an entry")
            key = _key(server, e.get("key"))
            if key is None:
                raise Invalid("a replay window without a key")
            prefix = _hexbytes(e.get("prefix"), 4, "prefix")
            server._replay[(key_name(key), prefix)] = _parse_window(e.get("window"))
        except Invalid as err:
            ignored.append(f"replay window: {err}")
    while len(server._replay) > REPLAY_STATE_MAX:   # as the live server bounds it
        server._replay.popitem(last=False)
    restored = 0
    for e in _list(state, "peers", ignored):
        try:
            peer = _peer(server, e, now, age)
            if not server._still_allowed(peer):
                raise Invalid("the configuration no longer allows it")
            if peer.endpoint in server.by_endpoint or peer.ip in server.by_ip:
                raise Invalid("its endpoint or address is taken twice")
            if len(server.by_endpoint) + server.other_clients() >= server.max_clients:
                raise Invalid("server full (--max-clients)")
        except Invalid as err:
            who = e.get("client_id") or e.get("ip") if type(e) is dict else None
            ignored.append(f"client {who or '?'}: {err}")
            continue
        server.by_endpoint[peer.endpoint] = peer
        server.by_ip[peer.ip] = peer
        if peer.rx_prefix is not None:
            server.by_prefix[peer.rx_prefix] = peer
            server._replay[(key_name(peer.key), peer.rx_prefix)] = peer.rx_window
        restored += 1
        server.register_log.info(peer.endpoint, "client %s restored from the state file",
                                 peer.describe())
    return restored, ignored
