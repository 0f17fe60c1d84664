"""camex-dissect: read a capture and explain every camex datagram in it.

    camex-dissect capture.pcap [--psk PASS]... [--psk-file F]... [--keylog F]...
                  [--port 7000,...] [--json] [-w inner.pcap [--segment]] [--no-summary]

One line per camex datagram (time, endpoints, type, sequence, length, inner
packet: IPv4 or IPv6, camex/dissect/inner.py), over IPv4 or IPv6 (IPv6
endpoints as [addr]:port; fragments of either reassembled). With passphrases, legacy encrypted datagrams are authenticated and
decrypted with the daemon's codec; those no key opens, replayed sequence
numbers (per sender prefix, 64-entry window as in the spec), malformed ones
and ones whose IP fragments are missing from the capture are reported as
such. v2 datagrams (camex/dissect/v2.py) show type, indices, counter and
the client ID of an INIT; with key logs (`camex --keylog`), v2 DATA is
decrypted the same way, and the fragments of v2 BULK frames are reassembled
and each frame decrypted once (-w writes a TSO super-packet as one packet,
as a capture on the TUN shows it: its TCP/UDP checksum field holds the
pseudo-header sum that the kernel completes; with --segment, cut into the
packets the receiving kernel delivers). A UDP GSO run captured before the
kernel cut it (on the sender, or on a veth) is shown as the datagrams it
holds, each with gso=k/n (JSON "gso": {segment, segments, size};
camex/dissect/gso.py). A summary per client (and per v2 session) ends the
output. Exit 1 (one error line) when the input cannot be read or an option
is wrong; 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time as _time
from dataclasses import dataclass, field

from camex.dissect import capture
from camex.dissect import gso as dissect_gso
from camex.dissect.inner import summary as inner_summary
from camex.dissect.v2 import V2Dissector
from camex.dissect.v2 import text_fields as v2_text_fields
from camex.legacy import codec
from camex.base.replay import ReplayWindow

REPLAY_WINDOW = 64


def replay_reason(win: ReplayWindow, seq: int) -> str | None:
    """None if `seq` is fresh (and record it in the daemon's own window
    class, sized as the spec's receiver), else why it is a replay."""
    if win.check(seq):
        win.update(seq)
        return None
    behind = win.top - seq
    if behind >= win.size:
        return f"replay: seq={seq} is {behind} behind {win.top} (outside the window)"
    return f"replay: seq={seq} already seen"


FAILURES = ("no-key", "replay", "malformed")


@dataclass
class ClientStats:
    endpoint: str
    names: set = field(default_factory=set)
    keys: set = field(default_factory=set)
    datagrams: int = 0
    bytes: int = 0
    failures: int = 0
    by_status: dict = field(default_factory=dict)

    def as_dict(self):
        return {"client": self.endpoint, "names": sorted(self.names), "keys": sorted(self.keys),
                "datagrams": self.datagrams, "bytes": self.bytes, "failures": self.failures,
                "status": dict(sorted(self.by_status.items()))}


class Dissector:
    """Turns capture Datagrams into records (dicts); keeps replay state and stats."""

    def __init__(self, keyring, ports, keylog=None):
        from camex import proto  # Scapy is loaded only by the dissector itself
        from camex.proto import v2 as proto_v2

        self.proto = proto
        self.v2_layer = proto_v2.CamexV2
        self.v2 = V2Dissector(keylog, ports, getattr(keyring, "passphrases", ()))
        self.keyring = keyring
        # A GSO run that ends in another message is cut only where the key
        # log opens the DATA before it (camex/dissect/gso.py).
        self._opens = (lambda piece: keylog.open(piece) is not None) if keylog else None
        self.ports = frozenset(ports)
        proto.set_ports(self.ports)
        self.windows: dict[bytes, ReplayWindow] = {}
        self.clients: dict[str, ClientStats] = {}
        self.totals: dict[str, int] = {}
        self.count = 0

    # -- classification

    def _client_of(self, d, kind, ptype, hint=None):
        """Which endpoint is the client: the one not on a camex port (v2:
        the one the message type or the session says)."""
        src, dst = capture.endpoint(d.src, d.sport), capture.endpoint(d.dst, d.dport)
        if hint == "c2s":
            return src, "c2s"
        if hint == "s2c":
            return dst, "s2c"
        if d.dport in self.ports and d.sport not in self.ports:
            return src, "c2s"
        if d.sport in self.ports and d.dport not in self.ports:
            return dst, "s2c"
        if ptype == "REGISTER":
            return src, "c2s"
        if ptype == "CONFIG":
            return dst, "s2c"
        return (src, "c2s") if d.sport >= d.dport else (dst, "s2c")

    def split(self, d: capture.Datagram) -> list:
        """`d`, or the datagrams it glues together when the capture holds a
        UDP GSO send not yet cut by the kernel (camex/dissect/gso.py)."""
        return dissect_gso.split(d, d.sport in self.ports or d.dport in self.ports, self._opens)

    def record(self, d: capture.Datagram) -> dict | None:
        cls = self.proto.classify(d.payload, d.sport, d.dport)
        if cls is None:
            return None
        p = self.proto
        rec = {"frame": d.index, "time": round(d.time, 6), "src": d.src, "sport": d.sport,
               "dst": d.dst, "dport": d.dport, "size": d.udp_length}
        if d.fragments > 1:
            rec["fragments"] = d.fragments
        if d.gso:  # one datagram of a UDP GSO run captured whole (dissect_gso.py)
            rec["gso"] = {"segment": d.gso[0], "segments": d.gso[1], "size": d.gso[2]}
        if cls is p.CX2PEncrypted or cls is p.CX2PMalformed:
            self._encrypted(d, rec)
        elif cls is p.CX2PControl:
            self._control(d, rec, d.payload, plaintext=True)
        elif cls is p.CX2PData:
            rec.update(mode="plaintext", type="DATA", seq=None, length=d.udp_length,
                       status="ok" if d.complete else "incomplete")
            self._inner(rec, d.payload, d.complete)
        elif cls is self.v2_layer:
            self.v2.record(d, rec, self._inner_summary)
        else:  # a later protocol version's layer: show what Scapy makes of it
            try:
                summary = cls(d.payload).summary()
            except Exception:  # top-level Scapy dissection raises on short input
                summary = f"{len(d.payload)} bytes"
            rec.update(mode=cls.__name__, type="?", seq=None, length=d.udp_length,
                       status="ok" if d.complete else "incomplete", summary=summary)
        if not d.complete:
            rec["detail"] = (f"{len(d.payload)} of {d.udp_length} bytes captured "
                             f"({d.why_incomplete or 'incomplete'})")
        client, direction = self._client_of(d, rec.get("mode"), rec.get("type"),
                                            rec.pop("_dir", None))
        rec["client"], rec["direction"] = client, direction
        self._account(rec, d)
        return rec

    def _encrypted(self, d, rec):
        buf = d.payload
        rec["mode"] = "encrypted"
        if len(buf) >= codec.HEADER_LEN:
            _m, t, prefix, _ns, length, seq = codec.HEADER.unpack_from(buf)
            rec.update(type=codec.TYPE_NAMES.get(t, f"type{t}"), seq=seq, prefix=prefix.hex(),
                       length=length)
        else:
            rec.update(type="?", seq=None, length=None)
        if not d.complete:
            rec["status"] = "incomplete"
            return
        try:
            header = codec.parse_header(buf)
        except codec.CodecError as exc:
            rec.update(status="malformed", detail=str(exc))
            return
        if not len(self.keyring):
            rec["status"] = "sealed"  # no passphrase given: nothing to check
            return
        try:
            opened = self.keyring.open(buf)
        except p_NoKey():
            rec.update(status="no-key", detail="no key opens it")
            return
        rec["key"] = opened.key.label
        win = self.windows.get(header.prefix)
        if win is None:
            win = self.windows[header.prefix] = ReplayWindow(REPLAY_WINDOW)
        replay = replay_reason(win, header.seq)
        if replay:
            rec.update(status="replay", detail=replay)
        else:
            rec["status"] = "ok"
        if header.type == codec.T_DATA:
            self._inner(rec, opened.plaintext, True)
        else:
            self._control(d, rec, opened.plaintext, plaintext=False)

    def _control(self, d, rec, text, plaintext):
        if plaintext:
            rec.update(mode="plaintext", seq=None, length=len(text),
                       status="ok" if d.complete else "incomplete")
        try:
            ctl = codec.parse_control(text)
        except codec.CodecError as exc:
            rec.setdefault("type", "CONTROL")
            if rec["status"] == "ok":
                rec.update(status="malformed", detail=str(exc))
            rec["summary"] = text[:80].decode("ascii", "backslashreplace")
            return
        if plaintext:
            rec["type"] = ctl.verb
        rec["control"] = {"verb": ctl.verb, "fields": [list(f) for f in ctl.fields],
                          "bare": list(ctl.bare)}
        rec["summary"] = text.decode("ascii").rstrip("\n")
        rec["_inner_bytes"] = None

    def _inner(self, rec, data, complete):
        rec["summary"] = self._inner_summary(data)
        rec["_inner_bytes"] = bytes(data)

    @staticmethod
    def _inner_summary(data) -> str:
        return inner_summary(data)

    def _account(self, rec, d):
        self.count += 1
        st = rec["status"]
        self.totals[st] = self.totals.get(st, 0) + 1
        c = self.clients.get(rec["client"])
        if c is None:
            c = self.clients[rec["client"]] = ClientStats(rec["client"])
        c.datagrams += 1
        c.bytes += d.udp_length
        c.by_status[st] = c.by_status.get(st, 0) + 1
        if st in FAILURES:
            c.failures += 1
        if rec.get("key") and rec["mode"] != "v2":  # v2 keys change every session
            c.keys.add(rec["key"])
        if rec["mode"] == "v2":
            self.v2.account(rec)
            if rec.get("client_id") and rec["type"] == "INIT":
                c.names.add(rec["client_id"])
        ctl = rec.get("control")
        if ctl and ctl["verb"] == "REGISTER" and rec["direction"] == "c2s":
            fields = dict(tuple(f) for f in ctl["fields"])
            name = fields.get("CLIENT_ID") or fields.get("LOCAL_IP") or \
                (ctl["bare"][0] if ctl["bare"] else None)
            if name:
                c.names.add(name)


def p_NoKey():
    from camex.proto.crypto import NoKeyError
    return NoKeyError


# ------------------------------------------------------------ output


def fmt_time(t: float) -> str:
    """UTC time of day like tcpdump; raw seconds if the capture's clock is absurd."""
    try:
        return _time.strftime("%H:%M:%S", _time.gmtime(t)) + f".{int(round(t % 1 * 1e6)) % 1000000:06d}"
    except (OverflowError, ValueError, OSError):  # pcapng timestamps are 64-bit
        return f"{t:.6f}"


def text_line(rec) -> str:
    parts = [fmt_time(rec["time"]), f"{capture.endpoint(rec['src'], rec['sport'])} > "
                                    f"{capture.endpoint(rec['dst'], rec['dport'])}"]
    if rec["mode"] == "v2":
        parts.append(f"v2 {rec['type']}")
        parts += v2_text_fields(rec)
    else:
        mode = "enc" if rec["mode"] == "encrypted" else "plain"
        parts.append(f"{mode} {rec['type']}")
    if rec.get("gso"):
        parts.append(f"gso={rec['gso']['segment']}/{rec['gso']['segments']}")
    if rec.get("seq") is not None:
        parts.append(f"seq={rec['seq']}")
    if rec.get("length") is not None:
        parts.append(f"len={rec['length']}")
    st = rec["status"]
    v2 = rec["mode"] == "v2"
    if st != "ok":
        parts.append({"no-key": "NO LOGGED KEY OPENS IT" if v2 and rec["type"] in ("DATA", "BULK")
                      else "NO KEY OPENS IT",
                      "replay": "REPLAYED",
                      "malformed": "MALFORMED", "incomplete": "INCOMPLETE",
                      "sealed": "(not decrypted: no key log)" if v2 else
                      "(not decrypted: no passphrase)"}.get(st, st.upper()))
    if rec.get("key") and not v2:
        parts.append(f"key={rec['key']}")
    if rec.get("summary"):
        parts.append("| " + rec["summary"])
    if rec.get("detail") and (st != "no-key" or v2):
        parts.append(f"[{rec['detail']}]")
    return " ".join(parts)


def summary_lines(dis: Dissector, stats: capture.Stats) -> list[str]:
    t = dis.totals
    fails = sum(t.get(s, 0) for s in FAILURES)
    out = [f"summary: {stats.frames} frames, {dis.count} camex datagrams, "
           f"{fails} failures ({t.get('no-key', 0)} no key, {t.get('replay', 0)} replayed, "
           f"{t.get('malformed', 0)} malformed), {t.get('incomplete', 0)} incomplete, "
           f"{t.get('sealed', 0)} not decrypted"]
    if stats.reassembled or stats.incomplete:
        out.append(f"  IP fragments: {stats.fragments} seen, {stats.reassembled} datagrams "
                   f"reassembled, {stats.incomplete} incomplete, "
                   f"{stats.orphan_fragments} without their first fragment")
    unsupported = sorted(lt for lt in stats.linktypes if not capture.supported_linktype(lt))
    if unsupported:
        out.append(f"  {stats.unsupported_linktype} frames of unsupported link types "
                   f"{unsupported} skipped")
    for c in sorted(dis.clients.values(), key=lambda c: c.endpoint):
        name = f" ({', '.join(sorted(c.names))})" if c.names else ""
        keys = f" key {', '.join(sorted(c.keys))}" if c.keys else ""
        out.append(f"  client {c.endpoint}{name}:{keys} {c.datagrams} datagrams, "
                   f"{c.bytes} bytes, {c.failures} failures")
    out += dis.v2.summary_lines()
    return out


# ------------------------------------------------------------ command line


class UsageError(Exception):
    pass


def _to_write(rec, inner, segment: bool) -> list:
    """The packets -w writes for a record: its inner packets; with
    --segment, a BULK record's TSO super-packets cut as the receiver's
    kernel would (camex.v2.bulk.segments; one it cannot cut stays whole)."""
    packets = inner if isinstance(inner, list) else [inner]
    if not segment or rec["type"] != "BULK":
        return packets
    from camex.v2 import bulk
    out = []
    for packet, r in zip(packets, rec["bulk"]["records"]):
        g = r["gso_size"]
        cut = _segments6(g, packet) if g and packet[:1] and packet[0] >> 4 == 6 else \
            bulk.segments(g, packet)
        out += cut or [packet]
    return out


def _segments6(g: int, packet) -> list:
    """An IPv6 TCP/UDP super-packet cut as the receiving kernel would
    (a TCPv6 or UDPv6 record of BULK, or of a capture of anything)."""
    from camex.base import netpkt
    nh = packet[6] if len(packet) > 6 else 0
    gtype = {6: netpkt.GSO_TCPV6, 17: netpkt.GSO_UDP_L4}.get(nh)
    if gtype is None:
        return []
    try:
        return netpkt.segment(netpkt.VnetHdr((netpkt.F_NEEDS_CSUM, gtype, 0, g, 40,
                                              16 if nh == 6 else 6)), packet)
    except netpkt.OffloadError:
        return []


def _ports(values) -> list[int]:
    ports = []
    for v in values or ["7000"]:
        for item in str(v).split(","):
            item = item.strip()
            if not item:
                continue
            try:
                port = int(item)
            except ValueError:
                raise UsageError(f"--port: {item!r} is not a port number") from None
            if not 0 < port < 65536:
                raise UsageError(f"--port: {port} is out of range 1..65535")
            ports.append(port)
    return ports


def _keyring(args):
    """The legacy KeyRing of every --psk / --psk-file passphrase; the raw
    passphrases stay in `ring.passphrases` (v2 handshakes derive their own
    keys from them)."""
    from camex.proto.crypto import KeyRing

    ring = KeyRing()
    passes = [(p.encode() if isinstance(p, str) else p, "--psk") for p in args.psk or []]
    for path in args.psk_file or []:
        try:
            with open(path, "rb") as fh:
                lines = fh.read().splitlines()
        except OSError as exc:
            raise UsageError(f"--psk-file: {path}: {exc.strerror or exc}") from None
        found = [ln for ln in lines if ln]
        if not found:
            raise UsageError(f"--psk-file: {path}: no passphrase in it")
        passes += [(ln, "--psk-file") for ln in found]
    for pw, opt in passes:
        if not codec.PASSPHRASE_MIN <= len(pw) <= codec.PASSPHRASE_MAX:
            raise UsageError(f"{opt}: passphrase must be {codec.PASSPHRASE_MIN} to "
                             f"{codec.PASSPHRASE_MAX} bytes, got {len(pw)}")
        ring.add(pw)
    ring.passphrases = [pw for pw, _ in passes]
    return ring


def _keylog(args):
    """A camex.proto.v2.KeyLog of every --keylog file, or None without any."""
    if not args.keylog:
        return None
    from camex.proto.v2 import KeyLog, KeyLogError

    log = KeyLog()
    for path in args.keylog:
        if os.path.isdir(path):
            raise UsageError(f"--keylog: {path}: is a directory")
        try:
            log.load(path)
        except OSError as exc:
            raise UsageError(f"--keylog: {path}: {exc.strerror or exc}") from None
        except KeyLogError as exc:
            raise UsageError(f"--keylog: {exc}") from None
    return log


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="camex-dissect",
        description="Show the camex datagrams of a pcap/pcapng capture; authenticate and "
                    "decrypt them with the given passphrases.")
    ap.add_argument("captures", nargs="+", metavar="CAPTURE", help="pcap or pcapng file")
    ap.add_argument("-k", "--psk", action="append", metavar="PASS",
                    help="passphrase to try (repeatable: one per client key); legacy: "
                         "decrypts; v2: authenticates handshakes and shows the INIT's request")
    ap.add_argument("--psk-file", action="append", metavar="FILE",
                    help="file of passphrases, one per line (repeatable)")
    ap.add_argument("--keylog", action="append", metavar="FILE",
                    help="camex v2 key log (written by `camex --keylog FILE`; lines "
                         "'CAMEX_V2 <index> <key>'): decrypt v2 DATA (repeatable)")
    ap.add_argument("-p", "--port", action="append", metavar="PORT[,PORT]",
                    help="camex UDP port(s) where plaintext DATA is expected "
                         "(default 7000; encrypted and control datagrams are also "
                         "recognised by content on any port)")
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("-w", "--write", metavar="FILE",
                    help="write the (decrypted) inner packets as a raw-IP pcap")
    ap.add_argument("--segment", action="store_true",
                    help="with -w: write each TSO super-packet of a v2 BULK frame cut into "
                         "the packets the receiving kernel delivers (checksums complete), "
                         "instead of whole")
    ap.add_argument("--no-summary", action="store_true", help="no summary at the end")
    ap.add_argument("-q", "--quiet", action="store_true",
                    help="no line per datagram, only the summary")
    return ap


class _Parser(argparse.ArgumentParser):
    pass


def main(argv=None) -> int:
    ap = build_parser()
    # argparse exits 2 on bad usage; the house rule is one line, exit 1.
    ap.error = lambda msg: (_ for _ in ()).throw(UsageError(msg))  # type: ignore[method-assign]
    out = sys.stdout
    try:
        args = ap.parse_args(argv)
        ports = _ports(args.port)
        ring = _keyring(args)
        keylog = _keylog(args)
        if args.segment and not args.write:
            raise UsageError("--segment: only with -w (it changes what -w writes)")
        writer = capture.PcapWriter(args.write) if args.write else None
    except UsageError as exc:
        print(f"camex-dissect: {exc}", file=sys.stderr)
        return 1
    except capture.CaptureError as exc:
        print(f"camex-dissect: -w: {exc}", file=sys.stderr)
        return 1
    dis = Dissector(ring, ports, keylog)
    stats = capture.Stats()
    rc = 0
    try:
        for path in args.captures:
            if os.path.isdir(path):
                raise capture.CaptureError(f"{path}: is a directory, not a capture")
            for d in (d for d0 in capture.datagrams(path, stats) for d in dis.split(d0)):
                rec = dis.record(d)
                if rec is None:
                    continue
                inner = rec.pop("_inner_bytes", None)
                if writer is not None and inner and rec["status"] in ("ok", "incomplete", "replay") \
                        and rec["type"] in ("DATA", "BULK"):
                    wirelen = d.udp_length if rec["mode"] == "plaintext" else None
                    for packet in _to_write(rec, inner, args.segment):
                        writer.write(d.time, packet, wirelen)
                if args.quiet:
                    continue
                if args.json:
                    out.write(json.dumps(rec) + "\n")
                else:
                    out.write(text_line(rec) + "\n")
    except capture.CaptureError as exc:
        print(f"camex-dissect: {exc}", file=sys.stderr)
        rc = 1
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    finally:
        if writer is not None:
            writer.close()
    if rc == 0 and not args.no_summary:
        if args.json:
            summary = {"summary": {
                "frames": stats.frames, "datagrams": dis.count,
                "status": dict(sorted(dis.totals.items())),
                "failures": sum(dis.totals.get(s, 0) for s in FAILURES),
                "fragments": {"seen": stats.fragments, "reassembled": stats.reassembled,
                              "incomplete": stats.incomplete,
                              "orphans": stats.orphan_fragments},
                "written": writer.count if writer else 0,
                "v2": dis.v2.as_dict(),
                "clients": [c.as_dict() for c in sorted(dis.clients.values(),
                                                        key=lambda c: c.endpoint)]}}
            out.write(json.dumps(summary) + "\n")
        else:
            for line in summary_lines(dis, stats):
                out.write(line + "\n")
            if writer is not None:
                out.write(f"  wrote {writer.count} inner packets to {args.write}\n")
    out.flush()
    return rc


if __name__ == "__main__":
    sys.exit(main())
