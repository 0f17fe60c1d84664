"""The camex v2 half of camex-dissect (camex/dissect/cli.py calls it).

Turns a v2 datagram (docs/PROTOCOL.md §4) into the fields of a dissector
record: type, sender/receiver index, counter, flags, the client ID of an
INIT (it travels in clear), and - given a key log (`--keylog`, lines
`CAMEX_V2 <index> <key>` written by `camex --keylog`) - the inner packets
of DATA. DATA that no logged key opens and replayed counters (a 2048-wide
window per receiver index, as the daemon's) are reported.

BULK (docs/V2-BULK.md): one line per fragment (index of count); the
fragments of a frame (receiver index + counter) are reassembled in any
order (dissect_v2_bulk.py), and with a key log the frame is decrypted once,
when its last fragment arrives: that fragment's line shows the frame's
inner packets (a TSO super-packet with its gso_size). Frames missing
fragments are listed as incomplete in the summary; a frame no logged key
opens (a tampered fragment) is reported on its completing fragment.

Sessions. A handshake is INIT (sender = the client's index C) answered by
RESP (receiver = C); the server's index S is inside the RESP's encrypted
part, so the dissector links S to C the way the protocol does: the client
sends its first DATA on a new session right after the RESP, so the first
DATA to an index not seen before, from the endpoint the RESP went to,
names S. DATA to C (server -> client) and to S (client -> server) are
then counted to the session C/S.

JSON fields of a v2 record (besides frame, time, endpoints, size, client,
direction, status, detail, summary): mode "v2", type INIT|RESP|COOKIE|
DATA|NOSESSION, length; sender (INIT), receiver (RESP, COOKIE, DATA) or
index (NOSESSION) as 8 hex digits like the key log; client_id and cookie
(mac2 present) for INIT; counter and flags (["CLOSE", "REKEY"]) for DATA
and BULK; session "client index/server index"; packets (inner packet
summaries) for decrypted DATA and the completing fragment of a decrypted
BULK frame, whose "bulk" also has the frame's size, its fragments' capture
frame numbers and its records [{length, gso_size}] (every BULK line has
"bulk": {index, count, slice}); psk and request (mode, local_cidr, mtu,
features) with --psk. The summary has "v2": {messages, keys, sessions:
[...], bulk: {fragments, complete, incomplete, incomplete_frames: [...]}}.

Passphrases (`--psk`, `--psk-file`) authenticate handshakes: the v2 key of
a passphrase is scrypt-salted with the client ID when it sits in a
`[client ID]` section, else global (PROTOCOL.md §2), so for an INIT both
are tried (one scrypt each, cached; per-ID derivations are capped at
MAX_IDS distinct IDs so a capture full of invented IDs stays cheap). The
key whose mac1 matches opens the INIT's request (Noise NNpsk0 encrypts
message 1 under the PSK alone: mode, requested address, MTU); RESP mac1 and
COOKIE are checked with the key of the INIT they answer. The RESP's
content (the auto configuration) needs the ephemeral DH and stays closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from camex.dissect.capture import endpoint
from camex.dissect.v2_bulk import BulkFrames
from camex.v2 import kdf, wire
from camex.v2.cookie import open_cookie
from camex.v2.noise import HandshakeState, NoiseError
from camex.v2.replay import WINDOW, ReplayWindow

MAX_IDS = 256  # distinct client IDs for which per-ID keys are derived


def hexidx(i: int | None) -> str | None:
    return None if i is None else f"{i:08x}"


@dataclass
class V2Session:
    client_index: int | None
    server_index: int | None = None
    client_id: str | None = None
    client: str | None = None        # client endpoint "ip:port"
    server: str | None = None
    first: float = 0.0
    last: float = 0.0
    data_c2s: int = 0
    data_s2c: int = 0
    keepalives: int = 0
    packets: int = 0                 # inner packets decrypted
    decrypted: int = 0               # DATA datagrams opened
    bytes: int = 0
    failures: int = 0
    by_status: dict = field(default_factory=dict)
    closed: bool = False             # a CLOSE was seen
    rekey_requests: int = 0          # DATA with the REKEY flag
    bulk_fragments: int = 0          # BULK datagrams
    bulk_frames: int = 0             # BULK frames complete

    @property
    def label(self) -> str:
        return f"{hexidx(self.client_index) or '?'}/{hexidx(self.server_index) or '?'}"

    def as_dict(self) -> dict:
        return {"session": self.label, "client_index": hexidx(self.client_index),
                "server_index": hexidx(self.server_index), "client_id": self.client_id,
                "client": self.client, "server": self.server, "first": round(self.first, 6),
                "last": round(self.last, 6), "data_c2s": self.data_c2s,
                "data_s2c": self.data_s2c, "keepalives": self.keepalives,
                "decrypted": self.decrypted, "packets": self.packets, "bytes": self.bytes,
                "failures": self.failures, "status": dict(sorted(self.by_status.items())),
                "closed": self.closed, "rekey_requests": self.rekey_requests,
                "bulk_fragments": self.bulk_fragments, "bulk_frames": self.bulk_frames}


def _feature_names(bits: int) -> list:
    """TLV_FEATURES bits by name (wire.FEATURE_NAMES), others in hex."""
    names = [name for bit, name in wire.FEATURE_NAMES.items() if bits & bit]
    rest = bits & ~sum(wire.FEATURE_NAMES)
    return names + ([f"0x{rest:02x}"] if rest else [])


def _flag_names(flags: int) -> list:
    names = [n for bit, n in ((wire.FLAG_CLOSE, "CLOSE"), (wire.FLAG_REKEY, "REKEY"))
             if flags & bit]
    rest = flags & ~(wire.FLAG_CLOSE | wire.FLAG_REKEY)
    return names + ([f"0x{rest:02x}"] if rest else [])


class V2Dissector:
    """v2 state of one camex-dissect run: key log, replay windows, sessions."""

    def __init__(self, keylog=None, ports=(), passphrases=()):
        self.keylog = keylog          # camex.proto.v2.KeyLog or None (no --keylog)
        self.ports = frozenset(ports)
        self.passphrases = list(passphrases)
        self._psks: dict = {}                      # (passphrase no., id or None) -> psk
        self._ids: set = set()
        self.init_keys: dict[int, tuple] = {}      # INIT sender -> (psk, label, mac1)
        self.windows: dict[int, ReplayWindow] = {}
        self.inits: dict[int, tuple] = {}          # client index -> (client id, endpoint)
        self.by_client: dict[int, V2Session] = {}  # client index -> session
        self.by_server: dict[int, V2Session] = {}  # server index -> session
        self.sessions: list[V2Session] = []
        self.messages: dict[str, int] = {}
        self.bulk = BulkFrames()

    # -- one datagram

    def record(self, d, rec: dict, inner_summary) -> None:
        """Fill `rec` for the v2 datagram `d`; `inner_summary(bytes) -> str`."""
        buf = d.payload
        t = wire.msg_type(buf)
        name = wire.TYPE_NAMES.get(t, f"type{t}")
        self.messages[name] = self.messages.get(name, 0) + 1
        src, dst = endpoint(d.src, d.sport), endpoint(d.dst, d.dport)
        rec.update(mode="v2", type=name, seq=None, length=d.udp_length, status="ok")
        if not d.complete:
            rec["status"] = "incomplete"
        rec["_dir"] = "c2s" if t == wire.T_INIT else "s2c"  # DATA: set by _data
        if t == wire.T_INIT:
            self._init(buf, rec, src, d)
        elif t == wire.T_RESP:
            self._resp(buf, rec, dst, src, d)
        elif t == wire.T_COOKIE:
            parsed = wire.parse_cookie(buf)
            rec["receiver"] = hexidx(int.from_bytes(buf[4:8], "little"))
            rec["summary"] = "cookie reply: server under load, INIT again with mac2"
            if parsed is None:
                self._malformed(rec, f"COOKIE must be {wire.COOKIE_LEN} bytes")
            else:
                self._check_answer(int.from_bytes(buf[4:8], "little"), rec,
                                   lambda psk, m1: open_cookie(psk, m1, parsed[1], parsed[2])
                                   is not None)
        elif t == wire.T_NOSESSION:
            index = wire.parse_nosession(buf)
            rec["index"] = hexidx(int.from_bytes(buf[4:8], "little"))
            if index is None:
                self._malformed(rec, f"NOSESSION must be {wire.NOSESSION_LEN} bytes")
            rec["summary"] = "the server knows no session with that index"
        elif t == wire.T_DATA:
            self._data(buf, rec, src, dst, d, inner_summary)
        elif t == wire.T_BULK:
            self._bulk(buf, rec, src, dst, d, inner_summary)

    def _malformed(self, rec, why):
        if rec["status"] == "ok":
            rec.update(status="malformed", detail=why)

    def _init(self, buf, rec, src, d):
        rec["sender"] = hexidx(int.from_bytes(buf[4:8], "little"))
        init = wire.parse_init(buf) if rec["status"] == "ok" else None
        if init is None:
            self._malformed(rec, "not a valid INIT (length or client ID)")
            return
        rec["client_id"] = init.client_id
        rec["cookie"] = init.mac2 != bytes(wire.MACLEN)  # mac2 set: answering a COOKIE
        self.inits[init.sender] = (init.client_id, src)
        rec["summary"] = f"handshake from client ID {init.client_id!r}" if init.client_id \
            else "handshake from a client without ID"
        if self.passphrases:
            self._open_init(init, rec)

    # -- passphrases (handshake authentication)

    def _candidates(self, client_id: str):
        """(psk, label) for every passphrase: the [client ID] key, then the global one."""
        ids = []
        if client_id and (client_id.lower() in self._ids or len(self._ids) < MAX_IDS):
            self._ids.add(client_id.lower())
            ids.append(client_id)
        ids.append(None)
        for n, pw in enumerate(self.passphrases, 1):
            for cid in ids:
                key = (n, cid.lower() if cid else None)
                if key not in self._psks:
                    self._psks[key] = kdf.derive_psk(pw, cid)
                where = f"[{cid}]" if cid else "global"
                yield self._psks[key], (where if len(self.passphrases) == 1
                                        else f"psk{n} {where}")

    def _open_init(self, init, rec):
        for psk, label in self._candidates(init.client_id):  # noqa: B007 (both used after the loop)
            if wire.equal(wire.mac(wire.mac1_key(psk), init.mac1_span), init.mac1):
                break
        else:
            rec.update(status="no-key", detail="no passphrase matches its mac1")
            return
        rec["psk"] = label
        self.init_keys[init.sender] = (psk, label, init.mac1)
        if len(self.init_keys) > 65536:  # bounded, whatever the capture holds
            self.init_keys.pop(next(iter(self.init_keys)))
        try:
            payload = HandshakeState("NNpsk0", False, init.prologue, psk).read_message(init.noise)
        except NoiseError:
            rec.update(status="malformed", detail="mac1 matches but the request does not open")
            return
        req = wire.decode_request(payload)
        if req is None:
            rec.update(status="malformed", detail="undecodable request payload")
            return
        features = _feature_names(req.features)
        rec["request"] = {"mode": "auto" if req.auto else "manual",
                          "local_cidr": str(req.local_cidr) if req.local_cidr else None,
                          "mtu": req.mtu, "features": features}
        what = "auto" if req.auto else f"manual {req.local_cidr or '(no address)'}"
        if req.mtu:
            what += f" mtu {req.mtu}"
        if features:
            what += ", accepts " + " ".join(features)
        rec["summary"] += f": asks for {what}"

    def _check_answer(self, receiver, rec, check) -> None:
        """RESP / COOKIE: verified with the key of the INIT it answers."""
        known = self.init_keys.get(receiver)
        if not self.passphrases or known is None:
            return
        psk, label, init_mac1 = known
        if check(psk, init_mac1):
            rec["psk"] = label
        else:
            rec.update(status="no-key", detail="does not match the key of the INIT it answers")

    def _resp(self, buf, rec, client, server, d):
        receiver = int.from_bytes(buf[4:8], "little")
        rec["receiver"] = hexidx(receiver)
        resp = wire.parse_resp(buf)
        if resp is None:
            self._malformed(rec, "RESP too short")
            return
        self._check_answer(receiver, rec, lambda psk, _m: wire.equal(
            wire.mac(wire.mac1_key(psk), resp.mac1_span), resp.mac1))
        cid, _ep = self.inits.get(receiver, (None, None))
        s = self.by_client.get(receiver)
        if s is None:
            s = self._new(receiver, d.time)
            s.client_id = cid
        s.client, s.server = client, server
        rec["session"] = s.label
        if cid is not None:
            rec["client_id"] = cid
        rec["summary"] = "handshake answer" + (f" to {cid!r}" if cid else "")

    def _new(self, client_index, now) -> V2Session:
        s = V2Session(client_index, first=now, last=now)
        if client_index is not None:
            self.by_client[client_index] = s
        self.sessions.append(s)
        return s

    def _session_for_data(self, receiver, src, dst, d) -> tuple:
        """(session, direction) of a DATA or BULK datagram to `receiver`."""
        s = self.by_client.get(receiver)
        if s is not None:
            return s, "s2c"
        s = self.by_server.get(receiver)
        if s is not None:
            return s, "c2s"
        # A first DATA to an unknown index: the server index of the newest
        # unlinked session whose client sent it (the client's key confirmation).
        for cand in reversed(self.sessions):
            if cand.server_index is None and cand.client == src and cand.client_index is not None:
                cand.server_index = receiver
                self.by_server[receiver] = cand
                return cand, "c2s"
        # Handshake not in the capture: a session known by this index only.
        # The camex port tells the direction, hence whose index it is (the
        # receiver chose it): the client's for server -> client datagrams.
        if d.sport in self.ports and d.dport not in self.ports:
            s = self._new(receiver, d.time)
            return s, "s2c"
        s = V2Session(None, server_index=receiver, first=d.time, last=d.time)
        self.by_server[receiver] = s
        self.sessions.append(s)
        return s, "c2s"

    def _data(self, buf, rec, src, dst, d, inner_summary):
        hdr = wire.parse_data_header(buf) if len(buf) >= wire.DATA_MIN else None
        if hdr is None:
            rec["receiver"] = hexidx(int.from_bytes(buf[4:8], "little"))
            self._malformed(rec, f"DATA shorter than {wire.DATA_MIN} bytes")
            return
        flags, receiver, counter = hdr
        rec.update(receiver=hexidx(receiver), counter=counter, flags=_flag_names(flags))
        s = self._transport(receiver, flags, rec, src, dst, d)
        s.data_s2c += rec["_dir"] == "s2c"
        s.data_c2s += rec["_dir"] == "c2s"
        if rec["status"] != "ok":
            return
        if self.keylog is None:
            rec["status"] = "sealed"
            return
        opened = self.keylog.open(buf)
        if opened is None:
            rec.update(status="no-key", detail=self._no_key(receiver))
            return
        packets = self._opened(rec, s, receiver, counter, opened, wire.parse_records,
                               "records overrun the plaintext")
        if packets is None:
            return
        if not packets:
            if flags & wire.FLAG_CLOSE:
                rec["summary"] = "session closed by its sender"
            elif flags & wire.FLAG_REKEY:
                rec["summary"] = "server asks for a new handshake"
            else:
                s.keepalives += 1
                rec["summary"] = "keepalive"
            rec["packets"] = []
            rec["_inner_bytes"] = []
            return
        s.packets += len(packets)
        summaries = [inner_summary(p) for p in packets]
        rec["packets"] = summaries
        rec["summary"] = " ; ".join(summaries)
        rec["_inner_bytes"] = packets

    def _transport(self, receiver, flags, rec, src, dst, d) -> V2Session:
        """Session, direction and flags of a DATA or BULK datagram."""
        s, direction = self._session_for_data(receiver, src, dst, d)
        rec["_dir"] = direction
        if s.client is None and direction == "c2s":
            s.client, s.server = src, dst
        elif s.client is None and direction == "s2c":
            s.client, s.server = dst, src
        rec["session"] = s.label
        if s.client_id:
            rec["client_id"] = s.client_id
        s.last = d.time
        s.bytes += d.udp_length
        if flags & wire.FLAG_CLOSE:
            s.closed = True
        if flags & wire.FLAG_REKEY:
            s.rekey_requests += 1
        rec["_session"] = s
        return s

    def _opened(self, rec, s, receiver, counter, opened, parse, overrun):
        """A DATA datagram or BULK frame that a logged key opened: its key,
        the replay window, the count; its records by `parse`, or None
        (reported as malformed with `overrun`)."""
        rec["key"] = opened.label
        self._replay(receiver, counter, rec)
        s.decrypted += 1
        items = parse(opened.plaintext)
        if items is None:
            rec["detail"] = overrun
            if rec["status"] == "ok":
                rec["status"] = "malformed"
        return items

    def _no_key(self, receiver) -> str:
        return ("the logged key does not open it" if self.keylog.has_index(receiver)
                else f"no key logged for index {receiver:08x}")

    def _replay(self, receiver, counter, rec) -> None:
        """The receiver's window (DATA and BULK share the counter): record
        `counter`, or mark `rec` as a replay."""
        win = self.windows.setdefault(receiver, ReplayWindow())
        if win.check(counter):
            win.update(counter)
            return
        behind = win.top - counter
        rec.update(status="replay", detail=(
            f"replay: counter={counter} already seen" if behind < WINDOW else
            f"replay: counter={counter} is {behind} behind {win.top} "
            f"(outside the {WINDOW} window)"))

    # -- BULK

    def _bulk(self, buf, rec, src, dst, d, inner_summary):
        parsed = wire.parse_bulk(buf) if rec["status"] == "ok" else None
        if parsed is None:
            if len(buf) >= 8:
                rec["receiver"] = hexidx(int.from_bytes(buf[4:8], "little"))
            if len(buf) >= wire.HEADER_BULK:
                rec["counter"] = int.from_bytes(buf[8:16], "little")
                rec["bulk"] = {"index": buf[3], "count": buf[16],
                               "slice": len(buf) - wire.HEADER_BULK}
            self._malformed(rec, _bulk_defect(buf))
            return
        flags, index, receiver, counter, count, data = parsed
        rec.update(receiver=hexidx(receiver), counter=counter, flags=_flag_names(flags),
                   bulk={"index": index, "count": count, "slice": len(data)})
        s = self._transport(receiver, flags, rec, src, dst, d)
        s.bulk_fragments += 1
        added = self.bulk.add(flags, index, receiver, counter, count, data,
                              buf[:wire.HEADER_BULK], d.index, d.time, s.label)
        if added.what in ("duplicate", "replay"):
            rec.update(status="replay", detail=added.detail)
            return
        if added.what == "conflict":
            rec.update(status="malformed", detail=added.detail)
            return
        if self.keylog is None:
            rec["status"] = "sealed"
        elif not self.keylog.has_index(receiver):
            rec.update(status="no-key", detail=self._no_key(receiver))
        fr = added.frame
        if added.detail:                       # it replaced another fragment
            rec["detail"] = added.detail
        if added.what == "held":
            rec["summary"] = f"fragment {index} of {count} ({len(fr.slices)} of {count} held)"
            return
        s.bulk_frames += not fr.failed         # a mended frame counts once
        sealed = fr.ciphertext()
        rec["bulk"].update(frame_bytes=len(sealed),
                           frames=[fr.frames[i] for i in range(count)])
        what = (f"frame complete: {count} fragment{'s' if count > 1 else ''}, "
                f"{len(sealed)} bytes sealed")
        rec["summary"] = what
        if rec["status"] != "ok":
            return
        opened = self.keylog.open_bulk(fr.header, sealed)
        if opened is None:
            rec.update(status="no-key", detail=(
                f"{what}, but the logged key does not open it (a fragment altered, "
                "or another key)"))
            self.bulk.reopen(fr)               # a later fragment may mend it
            return
        items = self._opened(rec, s, receiver, counter, opened, wire.parse_bulk_records,
                             "BULK records overrun the frame's plaintext")
        if items is None:
            return
        s.packets += len(items)
        packets = [bytes(p) for _g, p in items]
        rec["bulk"]["records"] = [{"length": len(p), "gso_size": g}
                                  for (g, _), p in zip(items, packets)]
        rec["packets"] = [inner_summary(p) + (f" [TSO gso_size={g}]" if g else "")
                          for (g, _), p in zip(items, packets)]
        rec["summary"] = f"{what}: " + (" ; ".join(rec["packets"]) or "no records")
        rec["_inner_bytes"] = packets

    # -- accounting and summary

    def account(self, rec) -> None:
        s = rec.pop("_session", None)
        if s is None:
            return
        st = rec["status"]
        s.by_status[st] = s.by_status.get(st, 0) + 1
        if st in ("no-key", "replay", "malformed"):
            s.failures += 1

    def summary_lines(self) -> list:
        if not self.messages:
            return []
        self.bulk.finish()
        counts = ", ".join(f"{self.messages[n]} {n}" for n in wire.TYPE_NAMES.values()
                           if n in self.messages)
        keys = "no key log" if self.keylog is None else f"{len(self.keylog)} logged keys"
        n = len(self.sessions)
        out = [f"  v2: {counts}; {n} session{'' if n == 1 else 's'} ({keys})"]
        for s in self.sessions:
            who = f" {s.client_id!r}" if s.client_id else ""
            ends = f" {s.client} <-> {s.server}" if s.client else ""
            flags = (" closed" if s.closed else "") + \
                (f" {s.rekey_requests} rekey requests" if s.rekey_requests else "")
            bulk = (f", BULK {s.bulk_fragments} fragments in {s.bulk_frames} complete frames"
                    if s.bulk_fragments else "")
            out.append(f"  v2 session {s.label}{who}{ends}: DATA {s.data_c2s} c2s / "
                       f"{s.data_s2c} s2c{bulk}, {s.decrypted} decrypted, {s.packets} inner "
                       f"packets, {s.keepalives} keepalives, {s.bytes} bytes, {s.failures} "
                       f"failures{flags}")
        return out + self.bulk.summary_lines()

    def as_dict(self) -> dict:
        self.bulk.finish()
        return {"messages": dict(sorted(self.messages.items())),
                "keys": None if self.keylog is None else len(self.keylog),
                "sessions": [s.as_dict() for s in self.sessions],
                "bulk": self.bulk.as_dict()}


def _bulk_defect(buf) -> str:
    """Why wire.parse_bulk refused a BULK datagram, in words."""
    if len(buf) <= wire.HEADER_BULK:
        return (f"BULK of {len(buf)} bytes: the {wire.HEADER_BULK}-byte header and at least "
                "one byte of the frame are needed")
    if buf[17] or buf[18] or buf[19]:
        return f"BULK reserved bytes 17..19 are {bytes(buf[17:20]).hex()}, not zero"
    if not 1 <= buf[16] <= wire.BULK_MAX_FRAGMENTS:
        return f"BULK fragment count {buf[16]} (must be 1..{wire.BULK_MAX_FRAGMENTS})"
    if buf[3] >= buf[16]:
        return f"BULK fragment index {buf[3]} not below the count {buf[16]}"
    return "not a valid BULK header"


def text_fields(rec) -> list:
    """The v2 part of a text line, after "v2 TYPE"."""
    parts = []
    for key in ("sender", "receiver", "index"):
        if rec.get(key) is not None:
            parts.append(f"{key}={rec[key]}")
    if rec.get("client_id") and rec["type"] == "INIT":  # a manual client may have none
        parts.append(f"id={rec['client_id']}")
    if rec.get("counter") is not None:
        parts.append(f"counter={rec['counter']}")
    if rec.get("bulk"):
        parts.append(f"frag={rec['bulk']['index']}/{rec['bulk']['count']}")
    if rec.get("flags"):
        parts.append("[" + ",".join(rec["flags"]) + "]")
    if rec.get("cookie"):
        parts.append("mac2")
    if rec.get("psk"):
        parts.append(f"psk={rec['psk']}")
    return parts
