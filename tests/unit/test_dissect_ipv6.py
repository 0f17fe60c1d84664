"""camex-dissect on captures with IPv6 outer headers (Ethernet, raw and Linux
cooked v2 link types; IPv6 Fragment headers reassembled) and IPv6 inner
packets, built here with Scapy and written into tmp_path. The checks read
the CLI's own text and JSON output, what a user sees."""

import json
import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import (ICMPv6EchoReply, ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt,
                                IPv6ExtHdrFragment, fragment6)
from scapy.layers.l2 import CookedLinuxV2, Ether
from scapy.utils import wrpcap

from camex import proto
from camex.daemon.keylog import KeyLogFile
from camex.dissect import capture, cli as dissect
from camex.testing.memlab import MemLab, Profile, make_server
from camex.v2 import kdf, wire
from camex.v2.client import ClientSession

PASS = "lab-pass"
CLIENT, SERVER = "2001:db8:7::2", "2001:db8:7::1"
PREFIX = b"\x11\x22\x33\x44"
IN_A, IN_B = "fd00:10::2", "fd00:10::1"


ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x86DD)


def outer6(payload, sport=40000, dport=7000, src=CLIENT, dst=SERVER):
    return IPv6(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload


def set_time(pkts, start=1000.0):
    for i, p in enumerate(pkts):
        p.time = start + i * 0.001
    return pkts


def run_text(capsys, path, *args):
    rc = dissect.main([str(path), *args])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out.splitlines()


def run_json(capsys, path, *args):
    rc = dissect.main([str(path), "--json", *args])
    out, err = capsys.readouterr()
    assert rc == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    return lines[:-1], lines[-1]["summary"]


def enc(inner, seq):
    return bytes(proto.seal(inner, PASS, PREFIX, seq))


# ------------------------------------------------------- legacy over IPv6


def test_legacy_encrypted_over_ipv6_every_link_type(tmp_path, capsys):
    inner = IP(src="10.0.0.2", dst="10.0.0.3") / ICMP(seq=1) / (b"x" * 64)
    for link, wrap, lt in (("ether", lambda p: ETH / p, None),
                           ("raw", lambda p: p, 101),
                           ("sll2", lambda p: CookedLinuxV2(proto=0x86DD) / p, None)):
        path = tmp_path / f"{link}.pcap"
        pkts = [outer6(enc(inner, s)) for s in range(2)]
        pkts.append(outer6(enc(inner, 2), sport=7000, dport=40000, src=SERVER, dst=CLIENT))
        wrpcap(str(path), set_time([wrap(p) for p in pkts]), linktype=lt)
        lines = run_text(capsys, path, "--psk", PASS)
        assert len(lines) >= 4, (link, lines)
        assert re.fullmatch(
            r"00:16:40\.000000 \[2001:db8:7::2\]:40000 > \[2001:db8:7::1\]:7000 enc DATA "
            r"seq=0 len=92 key=[0-9a-f]{8} \| IP / ICMP 10\.0\.0\.2 > 10\.0\.0\.3 "
            r"echo-request 0 / Raw", lines[0]), (link, lines[0])
        assert "[2001:db8:7::1]:7000 > [2001:db8:7::2]:40000 enc DATA seq=2" in lines[2]
        assert lines[3].startswith("summary: 3 frames, 3 camex datagrams, 0 failures")
        assert any(line.strip().startswith("client [2001:db8:7::2]:40000:") for line in lines)


def test_legacy_data_with_an_ipv6_inner_packet(tmp_path, capsys):
    echo = IPv6(src=IN_A, dst=IN_B) / ICMPv6EchoRequest(id=7, seq=3) / b"ping"
    path = tmp_path / "inner6.pcap"
    wrpcap(str(path), set_time([ETH / outer6(enc(echo, 0)),
                                ETH / outer6(bytes(echo))]))  # plaintext DATA on port 7000
    lines = run_text(capsys, path, "--psk", PASS)
    want = "| IPv6 / ICMPv6 fd00:10::2 > fd00:10::1 echo-request id=7 seq=3"
    assert " enc DATA seq=0 " in lines[0] and lines[0].endswith(want)
    assert " plain DATA " in lines[1] and lines[1].endswith(want)


# ------------------------------------------------------- IPv6 fragments


def test_an_ipv6_datagram_in_two_fragments_is_reassembled(tmp_path, capsys):
    inner = IP(src="10.0.0.2", dst="10.0.0.3") / ICMP(seq=9) / (b"y" * 1400)
    big = IPv6(src=CLIENT, dst=SERVER) / IPv6ExtHdrFragment(id=0x1234) / \
        UDP(sport=40000, dport=7000) / enc(inner, 5)
    frags = fragment6(big, 1280)
    assert len(frags) == 2
    small = outer6(enc(IP(src="10.0.0.2", dst="10.0.0.3") / ICMP(seq=10), 6))
    path = tmp_path / "frag6.pcap"
    # The second fragment first, a datagram in between: the reassembled one
    # still takes the place of its first-seen fragment.
    wrpcap(str(path), set_time([ETH / frags[1], ETH / small, ETH / frags[0]]))
    lines = run_text(capsys, path, "--psk", PASS)
    assert " enc DATA seq=5 len=1428 key=" in lines[0]  # 20 + 8 + 1400 bytes inside
    assert lines[0].endswith(" | IP / ICMP 10.0.0.2 > 10.0.0.3 echo-request 0 / Raw")
    assert " enc DATA seq=6 " in lines[1]
    assert "  IP fragments: 2 seen, 1 datagrams reassembled, 0 incomplete, " \
           "0 without their first fragment" in lines
    recs, summary = run_json(capsys, path, "--psk", PASS)
    assert [(r["seq"], r["status"], r.get("fragments", 1)) for r in recs] == \
        [(5, "ok", 2), (6, "ok", 1)]
    assert summary["failures"] == 0


def test_ipv6_fragments_after_an_extension_header_and_a_lost_one(tmp_path, capsys):
    inner = IP(src="10.0.0.2", dst="10.0.0.3") / ICMP() / (b"z" * 2500)
    frags = []
    for seq, fid in ((1, 1), (2, 2)):
        big = IPv6(src=CLIENT, dst=SERVER) / IPv6ExtHdrDestOpt() / IPv6ExtHdrFragment(id=fid) / \
            UDP(sport=40000, dport=7000) / enc(inner, seq)
        frags.append(fragment6(big, 1280))
    assert [len(f) for f in frags] == [3, 3]
    got = frags[0][:]
    random.Random(1).shuffle(got)
    path = tmp_path / "frag6b.pcap"
    wrpcap(str(path), set_time(got + [frags[1][0], frags[1][2]]), linktype=101)
    st = capture.Stats()
    dgs = list(capture.datagrams(path, st))
    assert [(d.complete, d.fragments) for d in dgs] == [(True, 3), (False, 2)]
    recs, summary = run_json(capsys, path, "--psk", PASS)
    assert [(r["seq"], r["status"]) for r in recs] == [(1, "ok"), (2, "incomplete")]
    assert summary["fragments"] == {"seen": 5, "reassembled": 1, "incomplete": 1, "orphans": 0}


def test_malformed_ipv6_is_counted_not_fatal(tmp_path, capsys):
    good = outer6(enc(IP(src="10.0.0.2", dst="10.0.0.3") / ICMP(), 0))
    short_ext = bytes(IPv6(src=CLIENT, dst=SERVER, nh=60, plen=8))  # header promised, absent
    path = tmp_path / "bad6.pcap"
    wrpcap(str(path), set_time([IPv6(short_ext), good]), linktype=101)
    st = capture.Stats()
    assert len(list(capture.datagrams(path, st))) == 1 and st.malformed == 1
    lines = run_text(capsys, path, "--psk", PASS)
    assert " enc DATA seq=0 " in lines[0]


# ------------------------------------------------------- v2 over IPv6


def test_v2_handshake_and_data_over_ipv6_with_inner_icmpv6_echo(tmp_path, capsys):
    passphrase = b"v6-lab-pass"
    psk = kdf.derive_psk(passphrase, None)
    keys = tmp_path / "keys"
    srv_log, cli_log = KeyLogFile(str(keys)), KeyLogFile(str(keys))
    srv = make_server(global_psk=psk, profiles={"cam6": Profile("10.0.0.9/24", "10.0.0.1")},
                      keylog=srv_log)
    lab = MemLab(srv)
    lab.add("c", ClientSession([psk], "cam6", wire.Request(auto=True), keylog=cli_log),
            ("2001:db8:7::9", 41000))
    lab.start("c")
    lab.run(1.0)
    req = bytes(IPv6(src=IN_A, dst=IN_B) / ICMPv6EchoRequest(id=1, seq=2) / b"ping")
    rep = bytes(IPv6(src=IN_B, dst=IN_A) / ICMPv6EchoReply(id=1, seq=2) / b"ping")
    lab.send_from("c", [req])
    lab.send_to("c", [rep])
    srv_log.close()
    cli_log.close()
    frames = []
    for t, direction, _n, data in lab.log:
        a, b = ("2001:db8:7::9", 41000), (SERVER, 7000)
        if direction == "s2c":
            a, b = b, a
        p = ETH / IPv6(src=a[0], dst=b[0]) / UDP(sport=a[1], dport=b[1]) / data
        p.time = t
        frames.append(p)
    path = tmp_path / "v2.pcap"
    wrpcap(str(path), frames)
    lines = run_text(capsys, path, "--keylog", str(keys), "--psk", passphrase.decode())
    init = [x for x in lines if " v2 INIT " in x]
    resp = [x for x in lines if " v2 RESP " in x]
    data = [x for x in lines if " v2 DATA " in x and "ICMPv6" in x]
    assert len(init) == 1 and "[2001:db8:7::9]:41000 > [2001:db8:7::1]:7000" in init[0]
    assert len(resp) == 1 and "[2001:db8:7::1]:7000 > [2001:db8:7::9]:41000" in resp[0]
    assert "id=cam6" in init[0] and "NO KEY" not in init[0]  # the passphrase opens it
    assert len(data) == 2
    assert data[0].endswith("| IPv6 / ICMPv6 fd00:10::2 > fd00:10::1 echo-request id=1 seq=2")
    assert data[1].endswith("| IPv6 / ICMPv6 fd00:10::1 > fd00:10::2 echo-reply id=1 seq=2")
    assert "[2001:db8:7::9]:41000 > [2001:db8:7::1]:7000" in data[0]
    assert any("[2001:db8:7::9]:41000 <-> [2001:db8:7::1]:7000" in x for x in lines)
    # -w writes the decrypted inner IPv6 packets, which Scapy reads back.
    out = tmp_path / "inner.pcap"
    dissect.main([str(path), "--keylog", str(keys), "-w", str(out), "-q"])
    capsys.readouterr()
    written = [d.data for d in capture.read_frames(str(out))]
    assert written == [req, rep]


def test_inner_ipv6_summaries():
    """TCP/UDP ports bracketed, the next protocol when there are none,
    extension headers named, truncation said."""
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6ExtHdrHopByHop

    from camex.dissect.inner import summary
    a, b = IN_A, IN_B
    assert summary(bytes(IPv6(src=a, dst=b) / TCP(sport=40000, dport=5201, flags="PA") / b"x")) \
        == "IPv6 / TCP [fd00:10::2]:40000 > [fd00:10::1]:5201 PA / Raw"
    assert summary(bytes(IPv6(src=a, dst=b) / UDP(sport=5353, dport=53))) == \
        "IPv6 / UDP [fd00:10::2]:5353 > [fd00:10::1]:53"
    assert summary(bytes(IPv6(src=a, dst=b) / IPv6ExtHdrHopByHop() / ICMPv6EchoRequest())) == \
        "IPv6 / hop-by-hop / ICMPv6 fd00:10::2 > fd00:10::1 echo-request id=0 seq=0"
    assert summary(bytes(IPv6(src=a, dst=b, nh=47) / b"gre!")) == \
        "IPv6 fd00:10::2 > fd00:10::1 gre"
    assert summary(bytes(IPv6(src=a, dst=b) / TCP())[:50]) == \
        "IPv6 fd00:10::2 > fd00:10::1 tcp (truncated)"
    assert summary(b"\x60" + bytes(10)) == "Raw"


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=200), st.sampled_from([0, 6, 17, 43, 44, 58, 60]))
def test_any_ipv6_bytes_give_a_line_and_never_raise(tail, nh):
    """Outer (Reassembler) and inner (summary) IPv6 parsing on garbage
    after a plausible fixed header: no exception, one line."""
    from camex.dissect.inner import summary
    pkt = bytes(IPv6(src=IN_A, dst=IN_B, nh=nh, plen=len(tail))) + tail
    assert summary(pkt).startswith("IPv6")
    r = capture.Reassembler()
    list(r.feed(1, 0.0, pkt))
    list(r.finish())


# ------------------------------------------- v2 BULK records holding IPv6


def _bulk_fragments(records, key, receiver, counter=0, size=1452):
    """The fragments of one BULK frame (docs/PROTOCOL.md, BULK: 20-byte
    header whose index byte varies, AD = the header with index 0, nonce =
    4 zero bytes + counter, records u16 length, u16 gso_size, packet)."""
    import struct

    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    plain = b"".join(struct.pack("!HH", len(p), g) + p for g, p in records)
    room = size - 20
    count = -(-(len(plain) + 16) // room)
    ad = struct.pack("<BBBBIQBBH", 0xC2, 6, 0, 0, receiver, counter, count, 0, 0)
    sealed = ChaCha20Poly1305(key).encrypt(bytes(4) + struct.pack("<Q", counter), plain, ad)
    return [ad[:3] + bytes((i,)) + ad[4:] + sealed[i * room:(i + 1) * room] for i in range(count)]


def test_bulk_frame_over_ipv6_with_ipv6_records(tmp_path, capsys):
    """BULK records are IPv4 in today's protocol; a frame holding IPv6 ones
    (a later peer's) is still shown and, with -w --segment, cut."""
    from scapy.layers.inet import TCP
    key, receiver = bytes(range(0x40, 0x60)), 0x0BADCAFE
    payload = bytes(range(256)) * 20
    sup = bytes(IPv6(src=IN_A, dst=IN_B) / TCP(sport=40000, dport=5201, flags="A") / payload)
    echo = bytes(IPv6(src=IN_A, dst=IN_B) / ICMPv6EchoRequest(id=5, seq=6))
    frags = _bulk_fragments([(1400, sup), (0, echo)], key, receiver)
    path = tmp_path / "bulk6.pcap"
    wrpcap(str(path), set_time([ETH / outer6(f, sport=41000) for f in frags]))
    keys = tmp_path / "keys"
    keys.write_text(f"CAMEX_V2 {receiver:08x} {key.hex()}\n")
    out = tmp_path / "inner.pcap"
    lines = run_text(capsys, path, "--keylog", str(keys), "-w", str(out), "--segment")
    done = [x for x in lines if "frame complete" in x]
    assert len(done) == 1 and "[2001:db8:7::2]:41000 > [2001:db8:7::1]:7000 v2 BULK" in done[0]
    assert "IPv6 / TCP [fd00:10::2]:40000 > [fd00:10::1]:5201 A / Raw [TSO gso_size=1400]" \
        in done[0]
    assert done[0].endswith("IPv6 / ICMPv6 fd00:10::2 > fd00:10::1 echo-request id=5 seq=6")
    written = [d.data for d in capture.read_frames(str(out))]
    assert len(written) == 5 and written[-1] == echo
    assert all(scapy_l4_valid(w) for w in written[:4])
    assert b"".join(w[60:] for w in written[:4]) == payload


def scapy_l4_valid(pkt: bytes) -> bool:
    from scapy.layers.inet import TCP
    p = IPv6(pkt)
    del p[TCP].chksum
    return bytes(p) == pkt
