"""camex-dissect on v2 BULK frames (docs/V2-BULK.md): captures written here
around frames sealed in this file with `cryptography`'s ChaCha20Poly1305
(and the frames of tests/vectors/v2_bulk.json), read with and without a
key log. What a user sees: one line per fragment, the frame reassembled in
any order and decrypted once (its inner packets on the completing
fragment's line, a TSO super-packet with its gso_size, -w writing them),
incomplete frames listed with the fragments they lack, tampered frames and
malformed fragments reported per datagram - never a crash."""

import json
import random
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap

from camex.dissect import cli as dissect

VECTORS = json.loads((Path(__file__).resolve().parents[2] /
                      "tests/vectors/v2_bulk.json").read_text())
CLIENT, SERVER = ("192.0.2.10", 40000), ("192.0.2.1", 7000)
KEY = bytes(range(0x60, 0x80))
RECEIVER = 0x1234ABCD


def seal_frame(records, counter, key=KEY, receiver=RECEIVER, size=1472, flags=0):
    """Fragments of one BULK frame, built from the layout in docs/V2-BULK.md."""
    plain = b"".join(struct.pack("!HH", len(p), g) + p for g, p in records)
    room = size - 20
    count = -(-(len(plain) + 16) // room)
    ad = struct.pack("<BBBBIQBBH", 0xC2, 6, flags, 0, receiver, counter, count, 0, 0)
    sealed = ChaCha20Poly1305(key).encrypt(bytes(4) + struct.pack("<Q", counter), plain, ad)
    return [ad[:3] + bytes((i,)) + ad[4:] + sealed[i * room:(i + 1) * room]
            for i in range(count)]


def super_packet(n=6000, mss=1388):
    """(gso_size, a TCP super-packet of n payload bytes) as a TSO TUN reads it."""
    p = IP(src="10.0.0.2", dst="10.0.0.1", id=7) / TCP(sport=5201, dport=40100, flags="A") / \
        (bytes(range(256)) * (n // 256 + 1))[:n]
    return mss, bytes(p)


def ping(i):
    return 0, bytes(IP(src="10.0.0.2", dst="10.0.0.1") / ICMP(id=1, seq=i) / b"hello")


def write(path, datagrams, t0=1000.0, step=0.001):
    pkts = []
    for i, d in enumerate(datagrams):
        p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / \
            IP(src=CLIENT[0], dst=SERVER[0]) / UDP(sport=CLIENT[1], dport=SERVER[1]) / d
        p.time = t0 + i * step
        pkts.append(p)
    wrpcap(str(path), pkts)
    return path


@pytest.fixture
def keys(tmp_path):
    f = tmp_path / "camex.keys"
    f.write_text(f"CAMEX_V2 {RECEIVER:08x} {KEY.hex()}\n{VECTORS['keylog']}\n")
    return f


def run(capsys, *args):
    rc = dissect.main([str(a) for a in args] + ["--json"])
    out, err = capsys.readouterr()
    lines = [json.loads(x) for x in out.splitlines()]
    assert rc == 0, err
    return lines[:-1], lines[-1]["summary"]


def text(capsys, *args):
    rc = dissect.main([str(a) for a in args])
    out = capsys.readouterr().out
    assert rc == 0
    return out.splitlines()


# ------------------------------------------------------------ reassembly


def test_frames_in_order_decrypt_once_on_their_last_fragment(tmp_path, capsys, keys):
    sp = super_packet()
    a = seal_frame([sp], counter=10)
    b = seal_frame([ping(1), ping(2)], counter=11)
    assert len(a) == 5 and len(b) == 1
    recs, summary = run(capsys, write(tmp_path / "b.pcap", a + b), "--keylog", keys)
    assert [r["type"] for r in recs] == ["BULK"] * 6
    assert all(r["status"] == "ok" and r["receiver"] == f"{RECEIVER:08x}" for r in recs)
    assert [(r["bulk"]["index"], r["bulk"]["count"]) for r in recs] == \
        [(0, 5), (1, 5), (2, 5), (3, 5), (4, 5), (0, 1)]
    assert [r["summary"] for r in recs[:4]] == [f"fragment {i} of 5 ({i + 1} of 5 held)"
                                                for i in range(4)]
    last = recs[4]
    assert last["bulk"]["frames"] == [1, 2, 3, 4, 5]
    assert last["bulk"]["records"] == [{"length": len(sp[1]), "gso_size": 1388}]
    assert len(last["packets"]) == 1 and "10.0.0.2:5201 > 10.0.0.1:40100" in last["packets"][0]
    assert last["packets"][0].endswith("[TSO gso_size=1388]")
    assert last["summary"].startswith("frame complete: 5 fragments, ")
    assert [s.split(" / ")[1] for s in recs[5]["packets"]] == ["ICMP 10.0.0.2 > 10.0.0.1 "
                                                               "echo-request 0"] * 2
    assert summary["v2"]["bulk"] == {"fragments": 6, "complete": 2, "incomplete": 0,
                                     "incomplete_frames": []}
    sess = summary["v2"]["sessions"][0]
    assert (sess["bulk_fragments"], sess["bulk_frames"], sess["decrypted"], sess["packets"]) \
        == (6, 2, 2, 3)
    assert summary["failures"] == 0


def test_out_of_order_and_interleaved_frames(tmp_path, capsys, keys):
    a = seal_frame([super_packet(9000)], counter=20)
    b = seal_frame([super_packet(4000, 1000)], counter=21)
    mixed = a[::-1][:3] + b[::-1] + a[::-1][3:]
    random.Random(1).shuffle(mixed)
    recs, summary = run(capsys, write(tmp_path / "o.pcap", mixed), "--keylog", keys)
    done = [r for r in recs if "packets" in r]
    assert len(done) == 2 and all(r["status"] == "ok" for r in recs)
    assert sorted(r["bulk"]["records"][0]["gso_size"] for r in done) == [1000, 1388]
    assert summary["v2"]["bulk"]["complete"] == 2


def test_w_writes_the_inner_packets_the_super_packet_whole(tmp_path, capsys, keys):
    sp, p1 = super_packet(), ping(3)
    out = tmp_path / "inner.pcap"
    _, summary = run(capsys, write(tmp_path / "w.pcap", seal_frame([sp, p1], counter=5)),
                     "--keylog", keys, "-w", out)
    assert summary["written"] == 2
    assert [bytes(p) for p in rdpcap(str(out))] == [sp[1], p1[1]]


def test_vector_frames(tmp_path, capsys, keys):
    datagrams = [bytes.fromhex(x) for f in VECTORS["frames"] for x in f["fragments"]]
    recs, summary = run(capsys, write(tmp_path / "v.pcap", datagrams), "--keylog", keys)
    done = [r for r in recs if "packets" in r]
    assert len(done) == len(VECTORS["frames"])
    for rec, f in zip(done, VECTORS["frames"]):
        assert rec["status"] == "ok" and rec["counter"] == f["counter"]
        assert rec["bulk"]["records"] == [{"length": len(r["packet"]) // 2,
                                           "gso_size": r["gso_size"]} for r in f["records"]]
        assert rec["bulk"]["frame_bytes"] == len(f["ciphertext"]) // 2
    rekey = next(r for r, f in zip(done, VECTORS["frames"]) if f["flags"])
    assert rekey["flags"] == ["REKEY"]


# ------------------------------------------------------------ without keys


def test_without_a_key_log_fragments_are_sealed_and_frames_still_counted(tmp_path, capsys):
    frags = seal_frame([super_packet()], counter=3)
    recs, summary = run(capsys, write(tmp_path / "s.pcap", frags[:-1] + frags[-1:]))
    assert all(r["status"] == "sealed" and "packets" not in r for r in recs)
    assert recs[-1]["summary"].startswith("frame complete: 5 fragments")
    assert summary["v2"]["bulk"]["complete"] == 1 and summary["status"] == {"sealed": 5}


def test_no_key_for_the_index(tmp_path, capsys, tmp_path_factory):
    other = tmp_path / "other.keys"
    other.write_text(f"CAMEX_V2 {RECEIVER ^ 1:08x} {KEY.hex()}\n")
    recs, _ = run(capsys, write(tmp_path / "n.pcap", seal_frame([ping(1)], counter=1)),
                  "--keylog", other)
    assert recs[0]["status"] == "no-key"
    assert recs[0]["detail"] == f"no key logged for index {RECEIVER:08x}"


# ------------------------------------------------------------ losses and attacks


def test_missing_fragment_is_an_incomplete_frame(tmp_path, capsys, keys):
    frags = seal_frame([super_packet()], counter=7)
    later = seal_frame([ping(9)], counter=8)
    path = write(tmp_path / "m.pcap", frags[:2] + frags[3:] + later)
    recs, summary = run(capsys, path, "--keylog", keys)
    assert all(r["status"] == "ok" for r in recs)
    assert [r for r in recs if "packets" in r] == [recs[-1]]   # only the later frame
    bulk = summary["v2"]["bulk"]
    assert (bulk["complete"], bulk["incomplete"]) == (1, 1)
    (inc,) = bulk["incomplete_frames"]
    assert (inc["frame"], inc["count"], inc["have"], inc["missing"], inc["first_frame"]) == \
        (f"{RECEIVER:08x}/7", 5, [0, 1, 3, 4], [2], 1)
    lines = text(capsys, path, "--keylog", keys)
    assert f"  v2 BULK frame {RECEIVER:08x}/7 INCOMPLETE: 4 of 5 fragments (missing 2), " \
           "first in capture frame 1" in lines
    assert "  v2 BULK: 5 fragments, 1 complete frames, 1 incomplete" in lines


def test_a_fragment_too_late_leaves_its_frame_incomplete(tmp_path, capsys, keys):
    frags = seal_frame([super_packet()], counter=7)
    pkts = [Ether() / IP(src=CLIENT[0], dst=SERVER[0]) / UDP(sport=CLIENT[1], dport=SERVER[1])
            / d for d in frags]
    for i, p in enumerate(pkts):
        p.time = 1000 + (60 if i == 4 else i * 0.001)   # the last one a minute later
    wrpcap(str(tmp_path / "late.pcap"), pkts)
    recs, summary = run(capsys, tmp_path / "late.pcap", "--keylog", keys)
    assert not any("packets" in r for r in recs)
    assert [f["missing"] for f in summary["v2"]["bulk"]["incomplete_frames"]] == [[4], [0, 1, 2, 3]]


@pytest.mark.parametrize("t", VECTORS["tampered"], ids=[t["name"] for t in VECTORS["tampered"]])
def test_tampered_frame_is_reported_not_decrypted(tmp_path, capsys, keys, t):
    path = write(tmp_path / "t.pcap", [bytes.fromhex(x) for x in t["fragments"]])
    recs, summary = run(capsys, path, "--keylog", keys, "-w", tmp_path / "i.pcap")
    assert not any("packets" in r for r in recs) and summary["written"] == 0
    bad = [r for r in recs if r["status"] != "ok"]
    assert bad and all(r["status"] in ("no-key", "malformed", "replay") for r in bad)
    last = recs[-1]   # every fragment there: the frame completes and fails to open
    assert last["status"] == "no-key" and "logged key does not open it" in last["detail"]
    assert summary["failures"] >= 1


def test_flipped_slice_text_line(tmp_path, capsys, keys):
    frags = seal_frame([super_packet()], counter=4)
    frags[2] = frags[2][:100] + bytes((frags[2][100] ^ 1,)) + frags[2][101:]
    lines = text(capsys, write(tmp_path / "f.pcap", frags), "--keylog", keys)
    assert f"v2 BULK receiver={RECEIVER:08x} counter=4 frag=4/5" in lines[4]
    assert "NO LOGGED KEY OPENS IT" in lines[4]
    assert "frame complete: 5 fragments" in lines[4] and "a fragment altered" in lines[4]


def test_duplicates_and_a_replayed_frame(tmp_path, capsys, keys):
    frags = seal_frame([super_packet()], counter=9)
    again = seal_frame([ping(1)], counter=9)   # the same counter once more: a replay
    seq = frags[:2] + frags[1:2] + frags[2:] + frags[:1] + again
    recs, summary = run(capsys, write(tmp_path / "d.pcap", seq), "--keylog", keys)
    st = [r["status"] for r in recs]
    assert st == ["ok", "ok", "replay", "ok", "ok", "ok", "replay", "replay"]
    assert "fragment 1 again (first in capture frame 2)" in recs[2]["detail"]
    assert "which was complete at capture frame 6" in recs[6]["detail"]
    assert sum("packets" in r for r in recs) == 1


def test_counter_shared_with_data_replay_window(tmp_path, capsys, keys):
    """A BULK frame reusing a counter already seen (in another frame
    layout) is a replay for the receiver's window, as the daemon counts."""
    a = seal_frame([ping(1)], counter=30)
    b = seal_frame([ping(1), ping(2)], counter=30, size=60)   # same counter, 2 fragments
    recs, _ = run(capsys, write(tmp_path / "r.pcap", a + b), "--keylog", keys)
    assert recs[0]["status"] == "ok"
    assert [r["status"] for r in recs[1:]][-1] == "replay"


def test_conflicting_fragment_count(tmp_path, capsys, keys):
    frags = seal_frame([super_packet()], counter=12)
    odd = bytearray(frags[1])
    odd[16] = 9
    recs, _ = run(capsys, write(tmp_path / "c.pcap", [frags[0], bytes(odd)] + frags[1:]),
                  "--keylog", keys)
    assert recs[1]["status"] == "malformed" and "count 9" in recs[1]["detail"]
    assert recs[-1]["status"] == "ok" and "packets" in recs[-1]


@pytest.mark.parametrize("m", VECTORS["malformed"], ids=[m["name"] for m in VECTORS["malformed"]])
def test_malformed_fragments_get_a_clear_message(tmp_path, capsys, keys, m):
    d = bytes.fromhex(m["bytes"])
    good = seal_frame([ping(1)], counter=2)
    recs, _ = run(capsys, write(tmp_path / "x.pcap", [d] + good), "--keylog", keys)
    assert len(recs) == 2 and recs[1]["status"] == "ok"
    rec = recs[0]
    if d[1] != 6:      # not BULK at all: dissected as what it is
        assert rec["type"] != "BULK"
        return
    assert rec["type"] == "BULK" and rec["status"] == "malformed"
    want = {"header-only": "at least one byte of the frame", "short": "20-byte header",
            "count-0": "count 0 (must be 1..64)", "count-65": "count 65 (must be 1..64)",
            "index-equals-count": "index 3 not below the count 3",
            "reserved-17": "reserved bytes 17..19 are 010000",
            "reserved-19": "reserved bytes 17..19 are 000080"}[m["name"]]
    assert want in rec["detail"]
    lines = text(capsys, tmp_path / "x.pcap")
    assert "MALFORMED" in lines[0] and want in lines[0]


# ------------------------------------------------------------ UDP GSO in captures


def test_a_gso_super_datagram_is_cut_into_its_fragments(tmp_path, capsys, keys):
    """Captured on a veth (or on the sender), a GSO send is one UDP datagram
    holding all the fragments back to back: each is shown and the frame
    decrypts, as if the kernel had cut it."""
    frags = seal_frame([super_packet()], counter=40)
    glued = b"".join(frags)
    recs, summary = run(capsys, write(tmp_path / "g.pcap", [glued] + seal_frame([ping(1)], 41)),
                        "--keylog", keys)
    assert len(recs) == 6 and all(r["status"] == "ok" for r in recs)
    assert [r["gso"] for r in recs[:5]] == [{"segment": k, "segments": 5, "size": 1472}
                                            for k in range(5)]
    assert [r["size"] for r in recs[:5]] == [1472] * 4 + [len(frags[-1])]
    assert "gso" not in recs[5]
    assert recs[4]["bulk"]["records"][0]["gso_size"] == 1388
    assert summary["v2"]["bulk"]["complete"] == 2
    lines = text(capsys, tmp_path / "g.pcap", "--keylog", keys)
    assert "frag=4/5 gso=4/5 len=272 | frame complete" in lines[4]


def test_gso_glued_data_datagrams_are_cut_too(tmp_path, capsys, keys):
    from camex.proto.v2 import seal_data
    same = [bytes(seal_data(RECEIVER, c, KEY, [ping(c)[1]])) for c in range(3)]
    assert len({len(d) for d in same}) == 1
    recs, _ = run(capsys, write(tmp_path / "d.pcap", [b"".join(same)]), "--keylog", keys)
    assert [(r["type"], r["counter"], r["status"]) for r in recs] == \
        [("DATA", c, "ok") for c in range(3)]
    assert all("echo-request" in r["summary"] for r in recs)


def test_runs_mixing_bulk_fragments_and_data_are_cut(tmp_path, capsys, keys):
    """A daemon's batch may hold BULK frames and DATA for the same peer;
    runs() groups datagrams by size only, so one GSO send can carry both:
    a DATA of the fragments' size inside a run, a shorter DATA closing
    one. Each datagram is shown and decrypted, as the kernel cuts them."""
    from camex.v2 import framing
    from camex.proto.v2 import seal_data
    frags = seal_frame([super_packet(5000)], counter=50)
    pad = len(frags[0]) - 16 - 2 - 20 - 8 - 16
    full = bytes(seal_data(RECEIVER, 51, KEY, [bytes(IP(src="10.0.0.2", dst="10.0.0.1") /
                                                      UDP(sport=9, dport=9) / bytes(pad))]))
    small = seal_frame([ping(52)], counter=52)                  # a one-fragment frame
    data = bytes(seal_data(RECEIVER, 53, KEY, [ping(53)[1]]))
    assert len(full) == len(frags[0]) and len(data) < len(small[0]) < len(frags[-1])
    sent = frags[:-1] + [full, frags[-1]] + small + [data]
    runs = [run for _size, run in framing.runs(sent)]               # what the sender makes
    assert [len(r) for r in runs] == [len(frags) + 1, 2]
    recs, summary = run(capsys, write(tmp_path / "m.pcap", [b"".join(r) for r in runs]),
                        "--keylog", keys)
    assert [(r["type"], r["counter"], r["status"]) for r in recs] == \
        [("BULK", 50, "ok")] * (len(frags) - 1) + [("DATA", 51, "ok"), ("BULK", 50, "ok"),
                                                   ("BULK", 52, "ok"), ("DATA", 53, "ok")]
    assert [r["gso"]["segments"] for r in recs] == [len(frags) + 1] * (len(frags) + 1) + [2, 2]
    assert summary["v2"]["bulk"]["complete"] == 2 and summary["failures"] == 0
    assert "echo-request" in recs[-1]["summary"] and "TSO" in recs[len(frags)]["summary"]


def test_a_single_datagram_is_never_cut(tmp_path, capsys, keys):
    one = seal_frame([super_packet(1000)], counter=2)
    assert len(one) == 1
    recs, _ = run(capsys, write(tmp_path / "s.pcap", one), "--keylog", keys)
    assert len(recs) == 1 and "gso" not in recs[0] and recs[0]["status"] == "ok"


def test_without_the_handshake_the_camex_port_gives_direction_and_index_owner(tmp_path, capsys,
                                                                             keys):
    """A capture started after the handshake: BULK from the server's port
    goes to the client's index, BULK to it to the server's index - on every
    datagram, not only the first; the client's first datagram to a new
    index names the server's index of that session, as after a RESP."""
    down = seal_frame([super_packet()], counter=1)                     # server -> client
    up = seal_frame([super_packet()], counter=1, receiver=RECEIVER ^ 0xFF)
    pkts = []
    for i, d in enumerate(down + up):
        a, b = (SERVER, CLIENT) if i < len(down) else (CLIENT, SERVER)
        p = Ether() / IP(src=a[0], dst=b[0]) / UDP(sport=a[1], dport=b[1]) / d
        p.time = 1000 + i * 0.001
        pkts.append(p)
    wrpcap(str(tmp_path / "late.pcap"), pkts)
    recs, summary = run(capsys, tmp_path / "late.pcap")
    assert [r["direction"] for r in recs] == ["s2c"] * len(down) + ["c2s"] * len(up)
    assert {r["client"] for r in recs} == {"%s:%d" % CLIENT}
    label = f"{RECEIVER:08x}/{RECEIVER ^ 0xFF:08x}"
    assert [r["session"] for r in recs] == [f"{RECEIVER:08x}/?"] * len(down) + [label] * len(up)
    (sess,) = summary["v2"]["sessions"]
    assert (sess["session"], sess["client"], sess["bulk_fragments"], sess["bulk_frames"]) == \
        (label, "%s:%d" % CLIENT, len(down) + len(up), 2)


def test_w_segment_cuts_super_packets_as_the_receiving_kernel_would(tmp_path, capsys, keys):
    g, sp = super_packet(6000, 1388)
    out = tmp_path / "seg.pcap"
    _, summary = run(capsys, write(tmp_path / "s.pcap", seal_frame([(g, sp), ping(2)], 6)),
                     "--keylog", keys, "-w", out, "--segment")
    pkts = rdpcap(str(out))
    assert summary["written"] == len(pkts) == 5 + 1          # ceil(6000 / 1388) + the ping
    tcp = [p for p in pkts if p.haslayer(TCP)]
    assert [len(p[TCP].payload) for p in tcp] == [1388] * 4 + [6000 - 4 * 1388]
    assert b"".join(bytes(p[TCP].payload) for p in tcp) == bytes(IP(sp)[TCP].payload)
    for p in tcp:   # checksums complete: Scapy recomputes the same values
        again = IP(bytes(p))
        del again[IP].chksum, again[TCP].chksum
        again = IP(bytes(again))
        assert (again[IP].chksum, again[TCP].chksum) == (p[IP].chksum, p[TCP].chksum)
    assert bytes(pkts[-1]) == ping(2)[1]


def test_segment_without_w_is_a_usage_error(tmp_path, capsys):
    assert dissect.main([str(write(tmp_path / "x.pcap", [])), "--segment"]) == 1
    assert capsys.readouterr().err.strip() == \
        "camex-dissect: --segment: only with -w (it changes what -w writes)"


def test_held_fragments_are_bounded_in_bytes():
    """A forged capture of huge slices cannot make the dissector hold more
    than max_held bytes: the oldest open frames are given up (incomplete)."""
    from camex.dissect.v2_bulk import BulkFrames
    frames = BulkFrames(max_held=100_000)
    for counter in range(10):
        for index in range(2):   # 2 of 3 fragments, 30 kB each: never complete
            frames.add(0, index, 1, counter, 3, bytes(30_000), bytes(20), counter, 1.0)
        assert frames.held <= 100_000
    assert frames.incomplete == 9 and len(frames.open) == 1 and frames.held == 60_000
    frames.add(0, 2, 1, 9, 3, bytes(10), bytes(20), 99, 1.0)        # completes the last one
    assert frames.complete == 1 and frames.held == 0 and not frames.open
    frames.finish()
    assert [r["missing"] for r in frames.reported] == [[2]] * 9


@pytest.mark.parametrize("where", ["middle", "last"])
def test_a_forged_fragment_sent_ahead_is_shown_and_the_frame_still_opens(tmp_path, capsys,
                                                                         keys, where):
    """As the daemons (docs/PROTOCOL.md §4.7): a fragment with other
    content at an index already held replaces it, and a frame that did not
    open is tried again when one of its fragments is replaced. The user
    sees which capture frame was replaced, and the frame's packets."""
    frags = seal_frame([super_packet()], counter=21)
    i = 2 if where == "middle" else len(frags) - 1
    forged = frags[i][:60] + bytes((frags[i][60] ^ 0xFF,)) + frags[i][61:]
    recs, summary = run(capsys, write(tmp_path / "p.pcap", [forged] + frags), "--keylog", keys)
    genuine = recs[1 + i]
    assert "replaces fragment %d of capture frame 1" % i in genuine["detail"]
    opened = [r for r in recs if "packets" in r]
    assert len(opened) == 1 and "TSO gso_size=" in opened[0]["packets"][0]
    if where == "last":
        # the genuine last-but-one fragment completed the frame with the
        # forgery in it: that one is shown as not opening
        assert recs[-2]["status"] == "no-key" and opened[0] is recs[-1]
    bulk = summary["v2"]["bulk"]
    assert bulk["complete"] == 1 and bulk["incomplete"] == 0


def test_a_run_ending_in_another_message_is_cut_where_the_key_log_opens_it(tmp_path, capsys,
                                                                           keys):
    """At a rekey a client sends a DATA and its INIT in one GSO run (sizes
    decide runs, not types), so no receiver index repeats to show the cut.
    With the key log the DATA before the cut opens: both are shown. A run
    whose first datagram does not open is left whole: a cut is never a guess."""
    from camex.v2 import framing
    from camex.proto.v2 import seal_data
    from camex.testing.memlab import sample_traffic
    init = bytes.fromhex(sample_traffic()["datagrams"][0][1])
    data = bytes(seal_data(RECEIVER, 5, KEY, [super_packet(200)[1]]))
    assert init[1] == 1 and len(init) < len(data)
    assert [len(r) for _s, r in framing.runs([data, init])] == [2]        # one GSO send
    recs, summary = run(capsys, write(tmp_path / "r.pcap", [data + init]), "--keylog", keys)
    assert [(r["type"], r["gso"]["segment"]) for r in recs] == [("DATA", 0), ("INIT", 1)]
    assert recs[0]["status"] == "ok"
    assert "TCP" in recs[0]["summary"] and summary["failures"] == 0
    forged = data[:40] + bytes((data[40] ^ 1,)) + data[41:]
    recs, _ = run(capsys, write(tmp_path / "f.pcap", [forged + init]), "--keylog", keys)
    assert len(recs) == 1 and "gso" not in recs[0]


def test_a_lone_data_with_the_mark_byte_inside_is_not_taken_for_a_run(tmp_path, capsys, keys):
    """The search for a run's cut looks at every 0xC2 byte of a DATA
    datagram (1 in 256 bytes of ciphertext): one at a position that would
    leave a 1-byte last piece is no cut, and the datagram opens
    (camex-dissect once raised IndexError on it)."""
    from camex.proto.v2 import seal_data
    data = next(d for d in (bytes(seal_data(RECEIVER, c, KEY, [ping(c)[1]]))
                            for c in range(1, 20000))
                if (len(d) - 1) % 2 == 0 and d[(len(d) - 1) // 2] == 0xC2)
    recs, summary = run(capsys, write(tmp_path / "c2.pcap", [data]), "--keylog", keys)
    assert len(recs) == 1 and recs[0]["status"] == "ok" and "gso" not in recs[0]
