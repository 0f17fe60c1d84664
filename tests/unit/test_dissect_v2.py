"""camex-dissect on v2 traffic: captures written here (Ether/IP/UDP around
the datagrams of camex.testing.memlab, via tests/vectors/v2.json, and a longer
in-memory run with rekeys), decoded without and with --keylog."""

import json
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap, wrpcap

from camex.dissect import cli as dissect
from camex import proto
from camex.v2 import wire
from camex.testing.memlab import MemLab, Profile, ipv4, make_server

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "tests/vectors/v2.json").read_text())
CLIENT, SERVER = tuple(VECTORS["client"]), tuple(VECTORS["server"])


def frame(data, direction, client=CLIENT, server=SERVER, t=1000.0):
    a, b = (client, server) if direction == "c2s" else (server, client)
    p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / \
        IP(src=a[0], dst=b[0]) / UDP(sport=a[1], dport=b[1]) / data
    p.time = t
    return p


def vector_pcap(path, extra=()):
    pkts = [frame(bytes.fromhex(v["bytes"]), v["direction"], t=1000 + i * 0.01)
            for i, v in enumerate(VECTORS["datagrams"])]
    for i, (data, direction) in enumerate(extra):
        pkts.append(frame(data, direction, t=1001 + i * 0.01))
    wrpcap(str(path), pkts)
    return path


@pytest.fixture
def keys(tmp_path):
    f = tmp_path / "camex.keys"
    f.write_text("\n".join(VECTORS["keylog"]) + "\n")
    return f


def run(capsys, *args):
    rc = dissect.main([str(a) for a in args] + ["--json"])
    out, err = capsys.readouterr()
    lines = [json.loads(x) for x in out.splitlines()] if out else []
    return rc, lines[:-1], (lines[-1]["summary"] if lines else None), err


def test_handshakes_and_headers_without_keys(tmp_path, capsys):
    rc, recs, summary, _ = run(capsys, vector_pcap(tmp_path / "v2.pcap"))
    assert rc == 0 and len(recs) == len(VECTORS["datagrams"])
    for rec, v in zip(recs, VECTORS["datagrams"]):
        assert rec["mode"] == "v2" and rec["type"] == wire.TYPE_NAMES[v["type"]]
        assert rec["direction"] == v["direction"] and rec["client"] == "%s:%d" % CLIENT
        assert rec["length"] == len(bytes.fromhex(v["bytes"]))
        if v["type"] == wire.T_INIT:
            assert rec["sender"] == f"{v['sender_index']:08x}"
            assert rec["client_id"] == "cam1" and rec["cookie"] == bool(v["cookie"])
        if v["type"] in (wire.T_RESP, wire.T_COOKIE, wire.T_DATA):
            assert rec["receiver"] == f"{v['receiver_index']:08x}"
        if v["type"] == wire.T_DATA:
            assert rec["counter"] == v["counter"] and rec["status"] == "sealed"
        else:
            assert rec["status"] == "ok"
        if v["type"] == wire.T_NOSESSION:
            assert rec["index"] == f"{v['index']:08x}"
    assert summary["v2"]["messages"] == {"COOKIE": 1, "DATA": 7, "INIT": 2, "NOSESSION": 1,
                                         "RESP": 1}
    assert summary["clients"][0]["names"] == ["cam1"]


def test_text_lines_show_type_indices_counter_and_id(tmp_path, capsys):
    assert dissect.main([str(vector_pcap(tmp_path / "v2.pcap"))]) == 0
    out = capsys.readouterr().out.splitlines()
    init = VECTORS["datagrams"][2]
    assert (f"192.0.2.10:40000 > 192.0.2.1:7000 v2 INIT sender={init['sender_index']:08x} "
            f"id=cam1 mac2 len=96") in out[2]
    assert "v2 COOKIE receiver=" in out[1] and "server under load" in out[1]
    assert "v2 DATA receiver=3e753daa counter=1 len=85 (not decrypted: no key log)" in out[6]
    assert "v2 DATA receiver=" in out[11] and "[CLOSE]" in out[11]
    assert any(line.startswith("  v2 session 8856e6e3/3e753daa 'cam1' 192.0.2.10:40000")
               for line in out)


def test_keylog_decrypts_data_and_shows_inner_packets(tmp_path, capsys, keys):
    rc, recs, summary, _ = run(capsys, vector_pcap(tmp_path / "v2.pcap"), "--keylog", keys)
    assert rc == 0
    data = [(r, v) for r, v in zip(recs, VECTORS["datagrams"]) if v["type"] == wire.T_DATA]
    for rec, v in data:
        if v["opens"]:
            assert rec["status"] == "ok", rec
            assert len(rec["packets"]) == len(v["packets"])
        else:
            assert rec["status"] == "no-key"
            assert rec["detail"] == f"no key logged for index {v['receiver_index']:08x}"
    two = next(r for r, v in data if len(v.get("packets", [])) == 2)
    assert all("10.0.0.2 > 10.251.0.9" in s for s in two["packets"])
    rekey = next(r for r, v in data if v["flags"] == wire.FLAG_REKEY)
    assert "ICMP 10.251.0.9 > 10.0.0.2 echo-request" in rekey["summary"]
    sess = summary["v2"]["sessions"][0]
    assert (sess["session"], sess["client_id"], sess["decrypted"], sess["packets"],
            sess["keepalives"], sess["closed"]) == ("8856e6e3/3e753daa", "cam1", 6, 4, 2, True)
    assert (sess["data_c2s"], sess["data_s2c"], sess["failures"]) == (3, 3, 0)
    assert summary["status"]["no-key"] == 1 and summary["failures"] == 1


def test_keylog_w_writes_the_inner_packets(tmp_path, capsys, keys):
    out = tmp_path / "inner.pcap"
    rc, _, summary, _ = run(capsys, vector_pcap(tmp_path / "v2.pcap"), "--keylog", keys,
                            "-w", out)
    want = [p for v in VECTORS["datagrams"] if v["type"] == wire.T_DATA and v["opens"]
            for p in v["packets"]]
    assert rc == 0 and summary["written"] == len(want) == 4
    assert [bytes(p).hex() for p in rdpcap(str(out))] == want


def test_replayed_counters_are_reported(tmp_path, capsys, keys):
    ping = next(v for v in VECTORS["datagrams"] if len(v.get("packets", [])) == 2)
    # the same DATA again, and a DATA 2100 counters behind the newest one
    from camex.proto.v2 import KeyLog, seal_data
    key = KeyLog(VECTORS["keylog"]).keys[ping["receiver_index"]][0]
    new = bytes(seal_data(ping["receiver_index"], 5000, key, [ipv4("10.0.0.2", "10.0.0.1")]))
    old = bytes(seal_data(ping["receiver_index"], 2900, key, [ipv4("10.0.0.2", "10.0.0.1")]))
    extra = [(bytes.fromhex(ping["bytes"]), "c2s"), (new, "c2s"), (old, "c2s")]
    rc, recs, summary, _ = run(capsys, vector_pcap(tmp_path / "v2.pcap", extra),
                               "--keylog", keys)
    again, fresh, stale = recs[-3:]
    assert again["status"] == "replay" and again["detail"] == "replay: counter=1 already seen"
    assert fresh["status"] == "ok"
    assert stale["status"] == "replay" and "outside the 2048 window" in stale["detail"]
    assert summary["status"]["replay"] == 2
    assert summary["v2"]["sessions"][0]["failures"] == 2


def test_wrong_logged_key_is_reported(tmp_path, capsys):
    f = tmp_path / "wrong.keys"
    f.write_text("".join(f"CAMEX_V2 {line.split()[1]} {'11' * 32}\n" for line in VECTORS["keylog"]))
    rc, recs, summary, _ = run(capsys, vector_pcap(tmp_path / "v2.pcap"), "--keylog", f)
    data = [r for r in recs if r["type"] == "DATA"]
    assert rc == 0 and all(r["status"] == "no-key" for r in data)
    assert data[0]["detail"] == "the logged key does not open it"
    assert summary["v2"]["sessions"][0]["failures"] == 6


def test_text_output_reports_no_logged_key(tmp_path, capsys, keys):
    assert dissect.main([str(vector_pcap(tmp_path / "v2.pcap")), "--keylog", str(keys)]) == 0
    out = capsys.readouterr().out
    assert "NO LOGGED KEY OPENS IT [no key logged for index 01020304]" in out
    assert "| IP / ICMP 10.251.0.9 > 10.0.0.2 echo-request 0" in out


@pytest.mark.parametrize("content,error", [
    (None, "--keylog: {path}: No such file or directory"),
    ("CAMEX_V2 zz 00\n", "--keylog: {path}:1: not a key log line: 'CAMEX_V2 zz 00'"),
])
def test_bad_keylog_is_one_line_exit_1(tmp_path, capsys, content, error):
    f = tmp_path / "k.log"
    if content is not None:
        f.write_text(content)
    rc = dissect.main([str(vector_pcap(tmp_path / "v2.pcap")), "--keylog", str(f)])
    err = capsys.readouterr().err
    assert rc == 1 and err == "camex-dissect: " + error.format(path=f) + "\n"


def test_two_keylogs_are_merged(tmp_path, capsys):
    a, b = tmp_path / "client.keys", tmp_path / "server.keys"
    a.write_text(VECTORS["keylog"][0] + "\n")
    b.write_text(VECTORS["keylog"][1] + "\n")
    rc, recs, summary, _ = run(capsys, vector_pcap(tmp_path / "v2.pcap"),
                               "--keylog", a, "--keylog", b)
    assert summary["v2"]["keys"] == 2
    assert summary["v2"]["sessions"][0]["decrypted"] == 6


def test_malformed_v2_datagrams(tmp_path, capsys):
    extra = [(b"\xc2\x05\x00\x00\x01\x02\x03\x04\x05", "s2c"),         # NOSESSION + 1
             (b"\xc2\x04\x00\x00" + bytes(20), "c2s"),                   # DATA < 32
             (b"\xc2\x01\x00\x00\x01\x00\x00\x00\x03a b" + bytes(80), "c2s")]  # bad ID
    rc, recs, summary, _ = run(capsys, vector_pcap(tmp_path / "v2.pcap", extra))
    assert [r["status"] for r in recs[-3:]] == ["malformed"] * 3
    assert recs[-3]["detail"] == "NOSESSION must be 8 bytes"
    assert summary["status"]["malformed"] == 3


def test_legacy_and_v2_on_one_port(tmp_path, capsys, keys):
    """A dual-protocol server: legacy datagrams still decode beside v2."""
    legacy = bytes(proto.seal(IP(src="10.0.0.3", dst="10.0.0.1") / ICMP(), "lab-pass",
                              b"\x01\x02\x03\x04", 0))
    extra = [(legacy, "c2s")]
    rc, recs, summary, _ = run(capsys, vector_pcap(tmp_path / "v2.pcap", extra),
                               "--keylog", keys, "--psk", "lab-pass")
    assert recs[-1]["mode"] == "encrypted" and recs[-1]["status"] == "ok"
    assert "ICMP 10.0.0.3 > 10.0.0.1" in recs[-1]["summary"]
    assert sum(r["mode"] == "v2" for r in recs) == len(VECTORS["datagrams"])


def test_sessions_across_rekeys(tmp_path, capsys):
    """250 s of traffic: the client rekeys every 120 s; every session is
    linked (client index / server index) and all its DATA decrypts."""
    keylog = []
    srv = make_server(global_psk=b"k" * 32, profiles={"cam1": Profile("10.0.0.2/24", "10.0.0.1")},
                      keylog=keylog.append)
    from camex.v2.client import ClientSession
    lab = MemLab(srv)
    lab.add("c", ClientSession([b"k" * 32], "cam1", wire.Request(auto=True)), CLIENT)
    lab.start("c")
    lab.run(1.0)

    def traffic(lab):
        if int(lab.now * 20) % 40 == 0:  # every 2 s each way
            lab.send_from("c", [ipv4("10.0.0.2", "10.0.0.1", b"up")])
            lab.send_to("c", [ipv4("10.0.0.1", "10.0.0.2", b"down")])
    lab.run(250.0, step=0.05, each=traffic)
    pkts = [frame(data, direction, t=t) for t, direction, _n, data in lab.log]
    path = tmp_path / "rekey.pcap"
    wrpcap(str(path), pkts)
    kf = tmp_path / "k.log"
    kf.write_text("\n".join(keylog) + "\n")
    rc, recs, summary, _ = run(capsys, path, "--keylog", kf)
    assert rc == 0 and summary["failures"] == 0
    sessions = summary["v2"]["sessions"]
    assert len(sessions) == 3  # initial + 2 rekeys
    assert all(s["client_index"] and s["server_index"] and s["client_id"] == "cam1"
               for s in sessions)
    data = [r for r in recs if r["type"] == "DATA"]
    assert data and all(r["status"] == "ok" for r in data)
    delivered = sum(len(d.packets) for d in lab.server_got) + len(lab.client_got["c"])
    assert delivered > 200 and sum(s["packets"] for s in sessions) == delivered
