"""camex-dissect --psk on v2 handshakes: the passphrase's v2 keys (global
and per client ID, scrypt as in the daemon) authenticate INIT, RESP and
COOKIE, and open the INIT's request (mode, address, MTU)."""

import json

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from camex.dissect import cli as dissect
from camex.v2 import kdf, wire
from camex.v2.client import ClientSession
from camex.testing.memlab import MemLab, Profile, make_server

PASS = b"lab-pass"
CLIENT, SERVER = ("192.0.2.10", 40000), ("192.0.2.1", 7000)


def conversation(path, request, section=False, mangle=None, **server_kw):
    """A memlab handshake of client 'cam1' written as a pcap; the server
    holds PASS globally or (section=True) in a [cam1] section."""
    psk = kdf.derive_psk(PASS, "cam1" if section else None)
    srv = make_server(global_psk=None if section else psk,
                      client_psks={"cam1": psk} if section else None,
                      profiles={"cam1": Profile("10.0.0.2/24", "10.0.0.1")}, **server_kw)
    lab = MemLab(srv)
    lab.add("c", ClientSession(kdf.client_candidates(PASS, "cam1"), "cam1", request), CLIENT)
    lab.start("c")
    lab.run(3.0)
    frames = []
    for t, direction, _n, data in lab.log:
        if mangle:
            data = mangle(data)
        a, b = (CLIENT, SERVER) if direction == "c2s" else (SERVER, CLIENT)
        p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / \
            IP(src=a[0], dst=b[0]) / UDP(sport=a[1], dport=b[1]) / data
        p.time = t
        frames.append(p)
    wrpcap(str(path), frames)
    return path


def run(capsys, *args):
    rc = dissect.main([str(a) for a in args] + ["--json"])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rc == 0
    return [r for r in lines[:-1] if r["mode"] == "v2"], lines[-1]["summary"]


def of(recs, t):
    return [r for r in recs if r["type"] == t]


def test_global_passphrase_authenticates_and_opens_the_request(tmp_path, capsys):
    path = conversation(tmp_path / "g.pcap", wire.Request(auto=True))
    recs, summary = run(capsys, path, "--psk", PASS.decode())
    inits = of(recs, "INIT")
    # The client offers its [cam1]-salted key first, then the global one;
    # the server holds the global one and answers that INIT.
    assert [r["psk"] for r in inits[:2]] == ["[cam1]", "global"]
    assert all(r["status"] == "ok" and r["request"]["mode"] == "auto" for r in inits)
    resp = of(recs, "RESP")[0]
    assert resp["status"] == "ok" and resp["psk"] == "global"
    assert resp["receiver"] == inits[1]["sender"]
    assert summary["failures"] == 0


def test_section_passphrase_and_a_manual_request(tmp_path, capsys):
    req = wire.Request(local_cidr=__import__("ipaddress").IPv4Interface("10.0.0.2/24"), mtu=1400)
    path = conversation(tmp_path / "s.pcap", req, section=True)
    recs, _ = run(capsys, path, "--psk", "other-pass", "--psk", PASS.decode())
    init = of(recs, "INIT")[0]
    assert init["psk"] == "psk2 [cam1]"
    assert init["request"] == {"mode": "manual", "local_cidr": "10.0.0.2/24", "mtu": 1400,
                               "features": []}
    assert of(recs, "RESP")[0]["psk"] == "psk2 [cam1]"
    assert dissect.main([str(path), "--psk", PASS.decode()]) == 0
    out = capsys.readouterr().out
    assert "psk=[cam1] len=" in out and "accepts" not in out


def test_request_features_show_bulk(tmp_path, capsys):
    """TLV_FEATURES in the INIT: the client accepts BULK (docs/V2-BULK.md)."""
    req = wire.Request(auto=True, features=wire.FEATURE_BULK)
    path = conversation(tmp_path / "f.pcap", req)
    recs, _ = run(capsys, path, "--psk", PASS.decode())
    init = of(recs, "INIT")[0]
    assert init["request"]["features"] == ["BULK"]
    assert dissect.main([str(path), "--psk", PASS.decode()]) == 0
    assert "asks for auto, accepts BULK" in capsys.readouterr().out


def test_wrong_passphrase_is_reported_on_the_inits(tmp_path, capsys):
    path = conversation(tmp_path / "w.pcap", wire.Request(auto=True))
    recs, summary = run(capsys, path, "--psk", "not-the-pass")
    assert all(r["status"] == "no-key" and r["detail"] == "no passphrase matches its mac1"
               for r in of(recs, "INIT"))
    assert "request" not in of(recs, "INIT")[0]
    assert of(recs, "RESP")[0]["status"] == "ok"  # nothing to check it with
    assert dissect.main([str(path), "--psk", "not-the-pass"]) == 0
    assert "v2 INIT" in capsys.readouterr().out.splitlines()[0]


def test_cookie_and_forged_resp_mac(tmp_path, capsys):
    def mangle(d):  # flip the RESP's mac1
        return d[:-1] + bytes((d[-1] ^ 1,)) if wire.msg_type(d) == wire.T_RESP else d
    path = conversation(tmp_path / "c.pcap", wire.Request(auto=True), mangle=mangle,
                        load_threshold=0)
    recs, _ = run(capsys, path, "--psk", PASS.decode())
    cookie = of(recs, "COOKIE")[0]
    assert cookie["status"] == "ok" and cookie["psk"] == "global"
    resp = of(recs, "RESP")[0]
    assert resp["status"] == "no-key"
    assert resp["detail"] == "does not match the key of the INIT it answers"


def test_without_passphrase_handshakes_are_not_judged(tmp_path, capsys):
    path = conversation(tmp_path / "n.pcap", wire.Request(auto=True))
    recs, _ = run(capsys, path)
    assert all(r["status"] == "ok" and "psk" not in r for r in of(recs, "INIT") + of(recs, "RESP"))
