"""camex-dissect on UDP GSO runs captured before the kernel cut them
(camex/dissect/gso.py): the camex daemons send equal-sized datagrams to a
peer in one sendmsg; a capture on the sender or on a veth shows them as
one UDP datagram. Legacy encrypted, legacy plaintext and v2 runs are cut
back into their datagrams; single datagrams and look-alikes are not."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from camex.dissect import cli as dissect, gso as dissect_gso
from camex import proto
from camex.dissect.capture import Datagram
from camex.proto.v2 import seal_data
from camex.v2 import wire

PASS = b"demo-global-secret"
CLIENT, SERVER = ("192.0.2.10", 40000), ("192.0.2.1", 7000)


def icmp(seq, size=40):
    return bytes(IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(seq=seq) / bytes(size))


def legacy(seq, size=40):
    return bytes(proto.seal(icmp(seq, size), PASS, b"\x0a\x00\x00\x02", seq))


def run(tmp_path, capsys, payloads, *args, sport=CLIENT[1], dport=SERVER[1]):
    pkts = []
    for i, data in enumerate(payloads):
        p = Ether() / IP(src=CLIENT[0], dst=SERVER[0]) / UDP(sport=sport, dport=dport) / data
        p.time = 1000 + i
        pkts.append(p)
    wrpcap(str(tmp_path / "g.pcap"), pkts)
    assert dissect.main([str(tmp_path / "g.pcap"), "--json", *map(str, args)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    return lines[:-1], lines[-1]["summary"]


def test_legacy_encrypted_run(tmp_path, capsys):
    run_ = [legacy(s) for s in (5, 6, 7)] + [legacy(8, 10)]   # the last one shorter
    recs, summary = run(tmp_path, capsys, [b"".join(run_)], "--psk", PASS.decode())
    assert [(r["seq"], r["status"]) for r in recs] == [(5, "ok"), (6, "ok"), (7, "ok"), (8, "ok")]
    assert [r["gso"]["segment"] for r in recs] == [0, 1, 2, 3]
    assert {r["gso"]["size"] for r in recs} == {len(run_[0])}
    assert all("echo-request" in r["summary"] for r in recs)
    assert summary["failures"] == 0


def test_legacy_plaintext_run_on_the_camex_port(tmp_path, capsys):
    pkts = [icmp(s) for s in range(3)]
    recs, _ = run(tmp_path, capsys, [b"".join(pkts)])
    assert [(r["mode"], r["type"], r["gso"]["segment"]) for r in recs] == \
        [("plaintext", "DATA", k) for k in range(3)]
    assert all(r["summary"].endswith("echo-request 0 / Raw") for r in recs)


def test_v2_data_run_and_text(tmp_path, capsys):
    key = bytes(range(32))
    keys = tmp_path / "k"
    keys.write_text(f"CAMEX_V2 0000beef {key.hex()}\n")
    run_ = [bytes(seal_data(0xBEEF, c, key, [icmp(c)])) for c in range(4)]
    recs, _ = run(tmp_path, capsys, [b"".join(run_)], "--keylog", keys)
    assert [(r["counter"], r["status"]) for r in recs] == [(c, "ok") for c in range(4)]
    assert dissect.main([str(tmp_path / "g.pcap"), "--keylog", str(keys)]) == 0
    assert "v2 DATA receiver=0000beef counter=2 gso=2/4 len=" in capsys.readouterr().out


def _dgram(payload, complete=True, udp_length=None):
    return Datagram(1, 1000.0, CLIENT[0], CLIENT[1], SERVER[0], SERVER[1], payload,
                    udp_length or len(payload), complete)


def test_truncated_capture_cuts_and_keeps_the_last_piece_incomplete():
    run_ = [legacy(s) for s in (1, 2, 3)]
    whole = b"".join(run_)
    parts = dissect_gso.split(_dgram(whole[:-30], complete=False, udp_length=len(whole)))
    assert [p.payload for p in parts[:2]] == run_[:2] and parts[2].payload == run_[2][:-30]
    assert [p.complete for p in parts] == [True, True, False]
    assert parts[2].udp_length == len(run_[2])


def test_look_alikes_are_not_cut():
    one = legacy(1)
    assert dissect_gso.split(_dgram(one)) == [_dgram(one)]
    # two datagrams of different senders (prefix) or of unequal length first
    other = bytes(proto.seal(icmp(2), PASS, b"\x0a\x00\x00\x03", 2))
    assert len(dissect_gso.split(_dgram(one + other))) == 1
    assert len(dissect_gso.split(_dgram(legacy(1, 10) + legacy(2, 40)))) == 1
    # a v2 datagram whose ciphertext happens to hold its own header once
    d = wire.data_header(7, 1) + wire.data_header(7, 2) + bytes(40)
    assert len(dissect_gso.split(_dgram(d))) == 1
    # plaintext IPv4 is cut only on a camex port
    two = icmp(1) + icmp(2)
    assert len(dissect_gso.split(_dgram(two), plaintext_port=False)) == 1
    assert len(dissect_gso.split(_dgram(two), plaintext_port=True)) == 2


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 40), st.integers(0, 1400), st.integers(0, 1400), st.integers(0, 2**32 - 1),
       st.sampled_from(["v2", "legacy"]))
def test_any_run_is_cut_back_into_its_datagrams(n, size, last, receiver, kind):
    key = bytes(32)
    if kind == "v2":
        make = lambda c, s: bytes(seal_data(receiver, c, key, [bytes(s)]))  # noqa: E731
    else:
        make = lambda c, s: bytes(proto.seal(bytes(s), PASS, b"abcd", c))  # noqa: E731
    run_ = [make(c, size) for c in range(n - 1)] + [make(n, min(last, size))]
    parts = dissect_gso.split(_dgram(b"".join(run_)))
    assert [p.payload for p in parts] == run_
    assert [p.gso for p in parts] == [(k, n, len(run_[0])) for k in range(n)]
