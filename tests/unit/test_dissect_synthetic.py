"""camex-dissect and camex.dissect.capture on captures built here: every link type,
pcapng, IPv4 reassembly (out of order, overlapping, never-completed), replays,
port selection and unreadable input."""

import json
import random
import struct

import pytest
from scapy.layers.inet import ICMP, IP, UDP, fragment
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1Q, Ether, Loopback
from scapy.utils import PcapNgWriter, wrpcap

from camex.dissect import capture, cli as dissect
from camex import proto
from camex.legacy import codec

PASS = "lab-pass"
CLIENT, SERVER = "10.250.0.2", "10.250.0.1"
PREFIX = b"\x11\x22\x33\x44"


def inner(n=64, seq=1):
    return IP(src="10.0.0.2", dst="10.0.0.3") / ICMP(seq=seq) / (b"x" * n)


def enc_datagram(seq, size=64, prefix=PREFIX, passphrase=PASS):
    return bytes(proto.seal(inner(size, seq), passphrase, prefix, seq))


def outer(payload, sport=40000, dport=7000, ip_id=1):
    return IP(src=CLIENT, dst=SERVER, id=ip_id) / UDP(sport=sport, dport=dport) / payload


def run(capsys, path, *args):
    rc = dissect.main([str(path), "--json", *args])
    out, err = capsys.readouterr()
    lines = [json.loads(x) for x in out.splitlines()] if out else []
    return rc, lines[:-1], (lines[-1]["summary"] if lines else None), err


def set_time(pkts, start=1000.0):
    for i, p in enumerate(pkts):
        p.time = start + i * 0.001
    return pkts


@pytest.mark.parametrize("link", ["ether", "vlan", "sll", "sll2", "raw", "loop"])
def test_link_types(tmp_path, capsys, link):
    pkts = [outer(enc_datagram(s), ip_id=s) for s in range(3)]
    wrap = {"ether": lambda p: Ether() / p, "vlan": lambda p: Ether() / Dot1Q(vlan=5) / p,
            "sll": lambda p: CookedLinux(proto=0x0800) / p,
            "sll2": lambda p: CookedLinuxV2(proto=0x0800) / p,
            "raw": lambda p: p, "loop": lambda p: Loopback(type=2) / p}[link]
    path = tmp_path / f"{link}.pcap"
    linktype = {"raw": 101, "loop": 0}.get(link)  # Scapy's Loopback is BSD null (host order)
    wrpcap(str(path), set_time([wrap(p) for p in pkts]), linktype=linktype)
    rc, recs, summary, _ = run(capsys, path, "--psk", PASS)
    assert rc == 0
    assert [(r["seq"], r["status"]) for r in recs] == [(0, "ok"), (1, "ok"), (2, "ok")]


def _block(btype, body):
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def test_pcapng_two_interfaces(tmp_path, capsys):
    """Two interfaces with their own link types and timestamp units."""
    a = bytes(Ether() / outer(enc_datagram(0), ip_id=1))
    b = bytes(CookedLinuxV2(proto=0x0800) / outer(enc_datagram(1), ip_id=2))
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb_us = _block(1, struct.pack("<HHI", 1, 0, 65535))
    # if_tsresol = 9 (nanoseconds), then end of options
    idb_ns = _block(1, struct.pack("<HHI", 276, 0, 65535) + struct.pack("<HHB3x", 9, 1, 9)
                    + b"\0\0\0\0")
    ts_a, ts_b = 1000_500000, 1001_250000000
    epb_a = _block(6, struct.pack("<IIIII", 0, ts_a >> 32, ts_a & 0xFFFFFFFF, len(a), len(a)) + a)
    epb_b = _block(6, struct.pack("<IIIII", 1, ts_b >> 32, ts_b & 0xFFFFFFFF, len(b), len(b)) + b)
    nrb = _block(4, b"\0\0\0\0")  # a block the reader skips
    path = tmp_path / "two.pcapng"
    path.write_bytes(shb + idb_us + idb_ns + epb_a + nrb + epb_b)
    frames = list(capture.read_frames(path))
    assert [f.linktype for f in frames] == [1, 276]
    assert [round(f.time, 6) for f in frames] == [1000.5, 1001.25]
    rc, recs, summary, _ = run(capsys, path, "--psk", PASS)
    assert rc == 0 and [r["status"] for r in recs] == ["ok", "ok"]


def test_scapy_written_pcapng(tmp_path, capsys):
    path = tmp_path / "scapy.pcapng"
    w = PcapNgWriter(str(path))
    for s in range(3):
        p = Ether() / outer(enc_datagram(s), ip_id=s)
        p.time = 1000 + s
        w.write(p)
    w.close()
    rc, recs, _, _ = run(capsys, path, "--psk", PASS)
    assert rc == 0 and [(r["seq"], r["status"]) for r in recs] == [(0, "ok"), (1, "ok"), (2, "ok")]


def test_pcap_nanosecond_and_big_endian(tmp_path):
    ip = bytes(outer(enc_datagram(0)))
    for magic, endian, div in ((0xA1B23C4D, ">", 1e9), (0xA1B2C3D4, ">", 1e6),
                               (0xA1B23C4D, "<", 1e9)):
        path = tmp_path / "x.pcap"
        frac = 123456789 if div == 1e9 else 123456
        path.write_bytes(struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, 101)
                         + struct.pack(endian + "IIII", 7, frac, len(ip), len(ip)) + ip)
        (f,) = capture.read_frames(path)
        assert f.data == ip and abs(f.time - (7 + frac / div)) < 1e-9


def test_fragments_reassembled_in_any_order(tmp_path, capsys):
    big = [outer(enc_datagram(s, size=3000), ip_id=100 + s) for s in range(4)]
    frags = []
    for p in big:
        frags += fragment(p, fragsize=1000)
    random.Random(4).shuffle(frags)
    frags.append(frags[3])  # a duplicated fragment changes nothing
    path = tmp_path / "frag.pcap"
    wrpcap(str(path), set_time([Ether() / f for f in frags]))
    st = capture.Stats()
    dgs = list(capture.datagrams(path, st))
    assert len(dgs) == 4 and all(d.complete for d in dgs)
    assert st.reassembled == 4 and st.incomplete == 0
    rc, recs, summary, _ = run(capsys, path, "--psk", PASS)
    assert sorted(r["seq"] for r in recs) == [0, 1, 2, 3]
    assert all(r["status"] == "ok" and r["fragments"] >= 4 for r in recs)
    assert all(r["length"] == len(inner(3000)) for r in recs)
    assert summary["failures"] == 0


def test_reassembled_datagram_keeps_capture_order(tmp_path):
    small = outer(enc_datagram(0), ip_id=1)
    f1, f2 = fragment(outer(enc_datagram(1, 2000), ip_id=2), fragsize=1200)
    later = outer(enc_datagram(2), ip_id=3)
    path = tmp_path / "order.pcap"
    wrpcap(str(path), set_time([small, f1, later, f2]), linktype=101)
    seqs = [codec.parse_header(d.payload).seq for d in capture.datagrams(path)]
    assert seqs == [0, 1, 2]


def test_missing_fragment_reported_incomplete_not_as_failure(tmp_path, capsys):
    f1, f2, f3 = fragment(outer(enc_datagram(5, 2500), ip_id=9), fragsize=1000)
    path = tmp_path / "lost.pcap"
    wrpcap(str(path), set_time([f1, f3, outer(enc_datagram(6), ip_id=10)]), linktype=101)
    rc, recs, summary, _ = run(capsys, path, "--psk", PASS)
    assert [(r["seq"], r["status"]) for r in recs] == [(5, "incomplete"), (6, "ok")]
    assert summary["failures"] == 0 and summary["status"]["incomplete"] == 1


def test_fragment_without_first_is_counted_not_shown(tmp_path, capsys):
    f1, f2 = fragment(outer(enc_datagram(5, 2000), ip_id=9), fragsize=1200)
    path = tmp_path / "orphan.pcap"
    wrpcap(str(path), set_time([f2]), linktype=101)
    st = capture.Stats()
    assert list(capture.datagrams(path, st)) == []
    assert st.orphan_fragments == 1


def test_fragment_sets_expire_and_stay_bounded():
    st = capture.Stats()
    r = capture.Reassembler(st, timeout=5.0, max_pending=8)
    out = []
    for i in range(100):
        f1, _ = fragment(outer(enc_datagram(i, 2000), ip_id=i), fragsize=1200)
        out += list(r.feed(i + 1, float(i), bytes(f1)))
        assert len(r.pending) <= 8
    out += list(r.finish())
    assert len(out) == 100 and not any(d.complete for d in out)
    assert [d.index for d in out] == list(range(1, 101))  # still in capture order


def test_replayed_sequence_numbers(tmp_path, capsys):
    seqs = [0, 1, 2, 2, 70, 5, 6, 69, 6, 71]
    pkts = [outer(enc_datagram(s), ip_id=i) for i, s in enumerate(seqs)]
    path = tmp_path / "replay.pcap"
    wrpcap(str(path), set_time(pkts), linktype=101)
    rc, recs, summary, _ = run(capsys, path, "--psk", PASS)
    status = [(r["seq"], r["status"]) for r in recs]
    # 2 twice; 5 and 6 are 65/64 behind 70 (outside the window); 69 is fresh; 6 again old
    assert status == [(0, "ok"), (1, "ok"), (2, "ok"), (2, "replay"), (70, "ok"),
                      (5, "replay"), (6, "replay"), (69, "ok"), (6, "replay"), (71, "ok")]
    assert summary["status"]["replay"] == 4 == summary["failures"]


def test_replay_window_is_per_sender_prefix(tmp_path, capsys):
    pkts = [outer(enc_datagram(3, prefix=b"AAAA")), outer(enc_datagram(3, prefix=b"BBBB"))]
    path = tmp_path / "prefix.pcap"
    wrpcap(str(path), set_time(pkts), linktype=101)
    _, recs, _, _ = run(capsys, path, "--psk", PASS)
    assert [r["status"] for r in recs] == ["ok", "ok"]


def test_replay_window_unit():
    # The daemon's own window class (camex.base.replay), 64 wide as the spec's receiver.
    w = dissect.ReplayWindow(dissect.REPLAY_WINDOW)
    check = lambda seq: dissect.replay_reason(w, seq)   # noqa: E731
    assert check(10) is None and check(9) is None
    assert check(10) == "replay: seq=10 already seen"
    assert check(10 + 64) is None       # slides: 10 is now 64 behind
    assert check(10) == "replay: seq=10 is 64 behind 74 (outside the window)"
    assert check(11) is None
    assert check(1000) is None and check(937) is None and check(936)


def test_wrong_passphrase_and_tampered_reported(tmp_path, capsys):
    good = enc_datagram(1)
    bad = bytearray(enc_datagram(2))
    bad[-1] ^= 1
    pkts = [outer(good), outer(bytes(bad)), outer(enc_datagram(3, passphrase="other")),
            outer(b"CX2P\x02" + b"\0" * 30)]
    path = tmp_path / "bad.pcap"
    wrpcap(str(path), set_time(pkts), linktype=101)
    rc, recs, summary, _ = run(capsys, path, "--psk", PASS)
    assert [r["status"] for r in recs] == ["ok", "no-key", "no-key", "malformed"]
    assert summary["failures"] == 3
    (client,) = summary["clients"]
    assert client["failures"] == 3 and client["datagrams"] == 4


def test_psk_file_with_several_passphrases(tmp_path, capsys):
    pkts = [outer(enc_datagram(1, passphrase="first")), outer(enc_datagram(2, passphrase="second"),
                                                              sport=40001)]
    path = tmp_path / "k.pcap"
    wrpcap(str(path), set_time(pkts), linktype=101)
    keys = tmp_path / "keys"
    keys.write_text("first\nsecond\n")
    _, recs, summary, _ = run(capsys, path, "--psk-file", str(keys))
    assert [r["status"] for r in recs] == ["ok", "ok"]
    assert recs[0]["key"] != recs[1]["key"]


def test_plaintext_data_only_on_selected_ports(tmp_path, capsys):
    pkts = [outer(bytes(inner()), dport=9000), outer(codec.register_manual("10.0.0.2"), dport=9000)]
    path = tmp_path / "port.pcap"
    wrpcap(str(path), set_time(pkts), linktype=101)
    _, recs, _, _ = run(capsys, path)
    assert [r["type"] for r in recs] == ["REGISTER"]  # control found by content only
    _, recs, _, _ = run(capsys, path, "--port", "7000,9000")
    assert [r["type"] for r in recs] == ["DATA", "REGISTER"]
    assert "10.0.0.2 > 10.0.0.3 echo-request" in recs[0]["summary"]


def test_non_camex_udp_ignored(tmp_path, capsys):
    pkts = [IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=53, dport=5353) / b"hello",
            outer(enc_datagram(0))]
    path = tmp_path / "mix.pcap"
    wrpcap(str(path), set_time(pkts), linktype=101)
    _, recs, summary, _ = run(capsys, path, "--psk", PASS)
    assert len(recs) == 1 and summary["frames"] == 2


def test_malformed_control_line(tmp_path, capsys):
    path = tmp_path / "ctl.pcap"
    wrpcap(str(path), set_time([outer(b"CX2P REGISTER MODE=\xff\n")]), linktype=101)
    _, recs, summary, _ = run(capsys, path)
    assert recs[0]["status"] == "malformed" and "ASCII" in recs[0]["detail"]


@pytest.mark.parametrize("content,why", [
    (b"", "not a pcap"),
    (b"hello world, this is text\n", "not a pcap"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated pcap file header"),
    (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x4d\x3c\x2b\x1a", "truncated section header"),
])
def test_unreadable_input_one_error_exit_1(tmp_path, capsys, content, why):
    path = tmp_path / "bad"
    path.write_bytes(content)
    rc = dissect.main([str(path)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert len(err.strip().splitlines()) == 1 and why in err and str(path) in err


def test_truncated_record_reports_error_after_what_it_read(tmp_path, capsys):
    path = tmp_path / "cut.pcap"
    wrpcap(str(path), set_time([outer(enc_datagram(0)), outer(enc_datagram(1))]), linktype=101)
    path.write_bytes(path.read_bytes()[:-10])
    rc = dissect.main([str(path), "--psk", PASS])
    out, err = capsys.readouterr()
    assert rc == 1 and "truncated record" in err and len(err.splitlines()) == 1
    assert "seq=0" in out


@pytest.mark.parametrize("args,word", [
    (["--port", "0"], "--port"), (["--port", "x"], "--port"),
    (["--psk", "a" * 64], "--psk"), (["--psk-file", "/nonexistent/keys"], "--psk-file"),
    (["--bogus"], "unrecognized"),
])
def test_bad_options_one_error_exit_1(tmp_path, capsys, args, word):
    path = tmp_path / "ok.pcap"
    wrpcap(str(path), set_time([outer(enc_datagram(0))]), linktype=101)
    rc = dissect.main([str(path), *args])
    _, err = capsys.readouterr()
    assert rc == 1 and word in err and len(err.splitlines()) == 1


def test_missing_file_and_directory(tmp_path, capsys):
    assert dissect.main([str(tmp_path / "nope.pcap")]) == 1
    assert "No such file" in capsys.readouterr().err
    assert dissect.main([str(tmp_path)]) == 1
    assert "directory" in capsys.readouterr().err


def test_snaplen_truncated_frames_reported_incomplete(tmp_path, capsys):
    full = bytes(outer(enc_datagram(3, size=400)))
    cut = full[:200]
    path = tmp_path / "snap.pcap"
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 200, 101)
                     + struct.pack("<IIII", 5, 0, len(cut), len(full)) + cut)
    rc, recs, summary, _ = run(capsys, path, "--psk", PASS)
    assert rc == 0
    (rec,) = recs
    assert rec["status"] == "incomplete" and rec["seq"] == 3
    assert "snapshot length" in rec["detail"] and summary["failures"] == 0
