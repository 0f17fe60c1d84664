"""v2 transport: replay, forgery, reflection, stale sessions, rekeying,
counters, batching, keepalives."""

import struct

from camex.v2 import wire
from camex.v2.client import ClientSession
from camex.v2.events import Down, Send
from camex.testing.memlab import MemLab, Profile, ipv4, make_server
from camex.v2.replay import ReplayWindow
from camex.v2.session import Timers

G = b"G" * 32
PROFILES = {"cam1": Profile("10.0.0.2/24", "10.0.0.1")}
ADDR = ("192.0.2.10", 4000)


def lab_up(timers=None, **kw):
    lab = MemLab(make_server(global_psk=G, profiles=PROFILES, timers=timers, **kw))
    lab.add("c", ClientSession([G], "cam1", wire.Request(auto=True), timers=timers), ADDR)
    lab.start("c")
    assert lab.clients["c"].established
    return lab


def pkt(i, src="10.0.0.2", dst="10.251.0.9"):
    return ipv4(src, dst, struct.pack("!I", i))


def counters(datagrams):
    return [struct.unpack_from("<IQ", d, 4) for d in datagrams]


# --- replay window --------------------------------------------------------

def test_window_edges_at_2048():
    w = ReplayWindow()
    assert w.size >= 2048
    w.update(5000)
    assert w.check(5000 - 2047)            # oldest counter still inside
    assert not w.check(5000 - 2048)        # first one outside
    w.update(5000 - 2047)
    assert not w.check(5000 - 2047)        # now seen
    assert not w.check(5000)               # top itself is seen
    assert w.check(4999) and w.check(5001)
    w.update(5001)                         # slide by one: 2047 back leaves
    assert not w.check(5001 - 2048)


def test_window_out_of_order_and_jumps():
    w = ReplayWindow()
    for c in (3, 1, 2, 0):
        assert w.check(c)
        w.update(c)
    assert not any(w.check(c) for c in range(4))
    w.update(2**63)                        # a huge jump clears, never blows up
    assert w.bitmap == 1 and not w.check(2**63) and w.check(2**63 - 1)
    assert not w.check(2**63 - 2048)


def test_check_has_no_side_effect():
    w = ReplayWindow()
    w.check(10)
    assert w.top == -1 and w.check(10)


# --- replays, forgeries, reflections ---------------------------------------

def test_replayed_data_is_rejected_on_both_sides():
    lab = lab_up()
    lab.send_from("c", [pkt(1)])
    up = lab.sent("c2s", kind=wire.T_DATA)[-1]
    n = len(lab.server_got)
    lab.to_server(up, ADDR)
    assert len(lab.server_got) == n and lab.server.stats["replay"] == 1
    lab.send_to("c", [pkt(2, "10.251.0.9", "10.0.0.2")])
    down = lab.sent("s2c", kind=wire.T_DATA)[-1]
    got = len(lab.client_got["c"])
    lab.to_client(down, ADDR)
    assert len(lab.client_got["c"]) == got and lab.clients["c"].stats["replay"] == 1


def test_replay_older_than_the_window_is_rejected():
    lab = lab_up()
    lab.send_from("c", [pkt(0)])
    old = lab.sent("c2s", kind=wire.T_DATA)[-1]
    for i in range(2100):
        lab.send_from("c", [pkt(i)])
    n = len(lab.server_got)
    lab.to_server(old, ADDR)
    assert len(lab.server_got) == n and lab.server.stats["replay"] == 1


def test_out_of_order_delivery_inside_the_window_is_accepted():
    lab = lab_up()
    c = lab.clients["c"]
    ds = [c.encrypt([pkt(i)], lab.now)[0] for i in range(50)]
    for d in reversed(ds):
        lab.to_server(d, ADDR)
    assert len(lab.server_got) == 50


def test_forged_data_with_a_valid_index_is_rejected_and_moves_nothing():
    lab = lab_up()
    lab.send_from("c", [pkt(1)])
    real = lab.sent("c2s", kind=wire.T_DATA)[-1]
    # Same header with a far-ahead counter, garbage ciphertext, other source.
    hdr = wire.data_header(struct.unpack_from("<I", real, 4)[0], 10**6)
    peer = lab.peer("c")
    top = peer.current.window.top
    n = len(lab.server_got)
    assert lab.server.receive(hdr + b"\x00" * 40, ("203.0.113.5", 9), lab.now) == []
    assert lab.server.stats["forged"] == 1 and len(lab.server_got) == n
    assert peer.current.window.top == top and peer.endpoint == ADDR
    lab.send_from("c", [pkt(2)])  # the real counter sequence still works
    assert len(lab.server_got) == n + 1


def test_reflected_datagrams_are_rejected():
    lab = lab_up()
    lab.send_from("c", [pkt(1)])
    lab.send_to("c", [pkt(2, "10.251.0.9", "10.0.0.2")])
    up = lab.sent("c2s", kind=wire.T_DATA)[-1]
    down = lab.sent("s2c", kind=wire.T_DATA)[-1]
    n, m = len(lab.server_got), len(lab.client_got["c"])
    # The server's own DATA sent back to it, the client's own to the client:
    # the index is the other side's, and the key is the other direction's.
    assert lab.server.receive(down, ADDR, lab.now) in ([], [Send(wire.pack_nosession(
        struct.unpack_from("<I", down, 4)[0]), ADDR)])
    assert lab.clients["c"].receive(up, lab.now) == []
    # Handshake messages reflected to where they came from are ignored too.
    init = lab.sent("c2s", kind=wire.T_INIT)[0]
    resp = lab.sent("s2c", kind=wire.T_RESP)[0]
    assert lab.clients["c"].receive(init, lab.now) == []
    assert lab.server.receive(resp, ADDR, lab.now) == []
    assert len(lab.server_got) == n and len(lab.client_got["c"]) == m


def test_replayed_init_costs_no_new_session():
    lab = lab_up()
    init = lab.sent("c2s", kind=wire.T_INIT)[0]
    before = dict(lab.server.sessions)
    assert lab.server.receive(init, ("198.51.100.1", 7), lab.now) == []
    assert lab.server.stats["init_replay"] == 1 and lab.server.sessions == before


# --- sessions over time ------------------------------------------------------

def test_rekey_under_traffic_loses_nothing_and_never_repeats_a_nonce():
    lab = lab_up()
    sent = [0]

    def traffic(lab):
        lab.send_from("c", [pkt(sent[0])])
        lab.send_to("c", [pkt(sent[0], "10.251.0.9", "10.0.0.2")])
        sent[0] += 1

    lab.run(400.0, step=0.5, each=traffic)
    assert lab.clients["c"].stats["handshakes"] >= 4     # ~every 120 s
    assert sum(len(d.packets) for d in lab.server_got) == sent[0]
    assert len(lab.client_got["c"]) == sent[0]
    for direction in ("c2s", "s2c"):
        pairs = counters(lab.sent(direction, kind=wire.T_DATA))
        assert len(pairs) == len(set(pairs))              # (index, counter) unique
        assert len({i for i, _ in pairs}) >= 4            # ...over several sessions
        for idx in {i for i, _ in pairs}:
            cs = [c for i, c in pairs if i == idx]
            assert cs == sorted(cs) and cs[0] == 0        # from 0, strictly growing
    assert not any(isinstance(e, Down) for e in lab.client_events["c"])


def test_rekey_after_messages():
    t = Timers(rekey_after_messages=20)
    lab = lab_up(timers=t)
    for i in range(25):
        lab.send_from("c", [pkt(i)])
    assert lab.clients["c"].stats["handshakes"] == 2
    assert sum(len(d.packets) for d in lab.server_got) == 25


def test_server_asks_for_rekey_when_its_counter_runs_high():
    t = Timers(rekey_after_messages=10)
    lab = lab_up(timers=t)
    lab.clients["c"].t = Timers()  # the client alone would not rekey yet
    for i in range(12):
        lab.send_to("c", [pkt(i, "10.251.0.9", "10.0.0.2")])
    flags = [d[2] for d in lab.sent("s2c", kind=wire.T_DATA)]
    assert wire.FLAG_REKEY in flags
    assert lab.clients["c"].stats["handshakes"] == 2


def test_stale_session_index_is_rejected_after_expiry():
    lab = lab_up()
    lab.send_from("c", [pkt(1)])
    old = lab.sent("c2s", kind=wire.T_DATA)[-1]
    old_index = struct.unpack_from("<I", old, 4)[0]
    lab.run(200.0)   # rekeyed; the first session is past REJECT_AFTER_TIME
    assert old_index not in lab.server.sessions
    n = len(lab.server_got)
    out = lab.server.receive(old, ADDR, lab.now)
    assert len(lab.server_got) == n
    assert out == [] or out == [Send(wire.pack_nosession(old_index), ADDR)]


def test_idle_client_keepalive_is_answered_and_keeps_the_session():
    lab = lab_up()
    lab.run(60.0)
    kas = [d for d in lab.sent("c2s", kind=wire.T_DATA) if len(d) == wire.DATA_MIN]
    assert len(kas) >= 3   # confirmation + ~every 25 s
    answers = [d for d in lab.sent("s2c", kind=wire.T_DATA) if len(d) == wire.DATA_MIN]
    assert len(answers) >= 2
    assert lab.clients["c"].stats["inits"] == 1  # no spurious re-handshake


def test_keepalive_interval_is_configurable():
    t = Timers(keepalive=5.0)
    lab = lab_up(timers=t)
    lab.run(21.0)
    kas = [d for d in lab.sent("c2s", kind=wire.T_DATA) if len(d) == wire.DATA_MIN]
    assert len(kas) >= 5


def test_one_way_stream_gets_passive_keepalives_and_no_false_dead_detection():
    lab = lab_up()
    lab.run(100.0, step=0.2, each=lambda lab: lab.send_from("c", [pkt(1)]))
    assert lab.clients["c"].stats["inits"] == 1
    assert len([d for d in lab.sent("s2c", kind=wire.T_DATA)]) >= 9  # ~every 10 s


# --- batching -----------------------------------------------------------------

def test_small_packets_share_a_datagram_and_arrive_in_order():
    lab = lab_up()
    packets = [pkt(i) for i in range(40)]   # 24 bytes each
    c = lab.clients["c"]
    ds = c.encrypt(packets, lab.now)
    assert len(ds) == 1 and len(ds[0]) == wire.DATA_MIN + 40 * 26
    for d in ds:
        lab.to_server(d, ADDR)
    assert lab.server_got[-1].packets == packets


def test_large_packets_are_split_across_datagrams():
    lab = lab_up()
    big = [ipv4("10.0.0.2", "10.251.0.9", bytes([i]) * 1000) for i in range(5)]
    ds = lab.clients["c"].encrypt(big, lab.now)
    assert len(ds) == 5 and all(len(d) <= 1472 for d in ds)
    for d in ds:
        lab.to_server(d, ADDR)
    assert [p for d in lab.server_got for p in d.packets] == big


def test_records_parsing_rejects_overruns():
    assert wire.parse_records(b"\x00\x05abc") is None
    assert wire.parse_records(b"\x00\x01a\x00\x00pad") == [b"a"]
    assert wire.parse_records(b"") == []


def test_keylog_lines_open_the_data_of_both_directions():
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from camex.v2.noise import nonce_bytes
    lines = []
    lab = MemLab(make_server(global_psk=G, profiles=PROFILES, keylog=lines.append))
    lab.add("c", ClientSession([G], "cam1", wire.Request(auto=True)), ADDR)
    lab.start("c")
    lab.send_from("c", [pkt(1)])
    lab.send_to("c", [pkt(2, "10.251.0.9", "10.0.0.2")])
    keys = {}
    for line in lines:
        tag, idx, key = line.split()
        assert tag == "CAMEX_V2"
        keys[int(idx, 16)] = bytes.fromhex(key)
    for d in lab.sent("c2s", kind=wire.T_DATA) + lab.sent("s2c", kind=wire.T_DATA):
        _, idx, ctr = wire.parse_data_header(d)
        plain = ChaCha20Poly1305(keys[idx]).decrypt(nonce_bytes(ctr), d[16:], d[:16])
        assert wire.parse_records(plain) is not None


def test_keepalive_zero_disables_idle_keepalives():
    t = Timers(keepalive=0)
    lab = lab_up(timers=t)
    lab.run(100.0)
    kas = [d for d in lab.sent("c2s", kind=wire.T_DATA) if len(d) == wire.DATA_MIN]
    assert len(kas) == 1            # only the key confirmation
    assert lab.clients["c"].established
