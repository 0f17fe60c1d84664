"""camex-dissect on a real v2 tunnel ("camex-dissect decodes v2
handshakes and, given the session keys, v2 data").

A v2 server and two v2 clients run with `--keylog`; the underlay link of
C1 is recorded in the server namespace (an AF_PACKET socket writing a
pcap, as tcpdump -w would) while C1 pings C2 through the server. What a
user then sees from `camex-dissect --keylog`: the handshake, and the ICMP
echo requests and replies inside the DATA datagrams - with the server's
key log and with the client's alike - and nothing decrypted without one.
"""

import json
import os
import stat
import subprocess
import sys
import time

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.utils import rdpcap

from camex.io.cpu import hardware_aes
from lab.capture import PcapRecorder
from lab.daemons import GLOBAL_PSK, Camex

pytestmark = pytest.mark.lab

PINGS = 4
# A camex client announces BULK, and AES-256-GCM where its CPU has AES
# instructions (both ends here: one machine).
AES = ["AES256GCM"] if hardware_aes() else []


def dissect(*args):
    """camex-dissect as a user runs it (the console script of this venv)."""
    exe = os.path.join(os.path.dirname(sys.executable), "camex-dissect")
    res = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=60)
    return res


def json_records(res):
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    return lines[:-1], lines[-1]["summary"]


def test_dissect_decodes_icmp_inside_a_live_v2_tunnel(star, tmp_path):
    cx = Camex(star, protocol="v2")
    server_keys, client_keys = tmp_path / "server.keys", tmp_path / "c1.keys"
    pcap = tmp_path / "underlay-c1.pcap"
    srv = cx.start_server(encrypt=True, psk=GLOBAL_PSK, extra=["--keylog", server_keys])
    rec = PcapRecorder(star.server, "c1", str(pcap))
    try:
        c1 = cx.start_client(star.c1, encrypt=True, psk=GLOBAL_PSK,
                             extra=["--keylog", client_keys])
        cx.start_client(star.c2, encrypt=True, psk=GLOBAL_PSK)
        star.c1.wait_ping(star.c2.tunnel_ip, timeout=10)
        result = star.c1.ping(star.c2.tunnel_ip, count=PINGS, interval=0.2)
        time.sleep(0.3)
    finally:
        rec.close()
    assert result.received == PINGS

    # Both roles created their key log private, and said so loudly.
    for path, proc in ((server_keys, srv), (client_keys, c1)):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert "WARNING" in proc.output() and "SESSION KEYS ARE WRITTEN" in proc.output()
        assert path.read_text().startswith("CAMEX_V2 ")

    # Without keys: handshakes and headers, DATA sealed.
    recs, summary = json_records(dissect(pcap, "--json"))
    v2 = [r for r in recs if r["mode"] == "v2"]
    assert {"INIT", "RESP", "DATA"} <= {r["type"] for r in v2}
    assert all(r["status"] == "sealed" for r in v2 if r["type"] == "DATA")
    init = next(r for r in v2 if r["type"] == "INIT")
    assert init["src"] == star.c1.underlay and init["direction"] == "c2s"

    # With either side's key log: every DATA opens, ICMP inside.
    for keys in (server_keys, client_keys):
        out = tmp_path / f"inner-{keys.stem}.pcap"
        recs, summary = json_records(dissect(pcap, "--json", "--keylog", keys, "-w", out))
        data = [r for r in recs if r["mode"] == "v2" and r["type"] == "DATA"]
        assert data and all(r["status"] == "ok" for r in data), \
            [r for r in data if r["status"] != "ok"]
        inner = [s for r in data for s in r["packets"]]
        requests = [s for s in inner if f"ICMP {star.c1.tunnel_ip} > {star.c2.tunnel_ip} "
                    "echo-request" in s]
        replies = [s for s in inner if f"ICMP {star.c2.tunnel_ip} > {star.c1.tunnel_ip} "
                   "echo-reply" in s]
        assert len(requests) >= PINGS and len(replies) >= PINGS, inner
        sessions = summary["v2"]["sessions"]
        assert sessions and sessions[0]["client"].startswith(star.c1.underlay + ":")
        assert sessions[0]["server_index"] and sessions[0]["client_index"]
        written = rdpcap(str(out))
        echo = [p for p in written if p.haslayer(ICMP) and p[ICMP].type == 8]
        assert len(echo) >= PINGS and all(p[IP].src == star.c1.tunnel_ip for p in echo)

    # With the passphrase: the handshake authenticates and its request opens.
    recs, _ = json_records(dissect(pcap, "--json", "--psk", GLOBAL_PSK))
    init = next(r for r in recs if r["mode"] == "v2" and r["type"] == "INIT")
    assert init["status"] == "ok" and init["psk"] == "global"
    assert init["request"] == {"mode": "manual", "local_cidr": f"{star.c1.tunnel_ip}/24",
                               "mtu": None, "features": ["BULK"] + AES}
    assert next(r for r in recs if r["type"] == "RESP")["psk"] == "global"

    # The text lines a user reads.
    res = dissect(pcap, "--keylog", server_keys)
    assert res.returncode == 0
    assert "v2 INIT sender=" in res.stdout and "v2 RESP receiver=" in res.stdout
    assert "echo-request" in res.stdout and "echo-reply" in res.stdout
    assert "  v2 session " in res.stdout


def test_dissect_follows_rekeys_of_a_live_tunnel(star, tmp_path):
    """--rekey-after 10: a new session (new keys, new key log lines) every
    10 s; every session's DATA still decrypts and is counted to its session."""
    cx = Camex(star, protocol="v2")
    keys, pcap = tmp_path / "server.keys", tmp_path / "rekey.pcap"
    cx.start_server(encrypt=True, psk=GLOBAL_PSK,
                    extra=["--keylog", keys, "--rekey-after", "10"])
    rec = PcapRecorder(star.server, "c1", str(pcap))
    try:
        cx.start_client(star.c1, encrypt=True, psk=GLOBAL_PSK, extra=["--rekey-after", "10"])
        cx.start_client(star.c2, encrypt=True, psk=GLOBAL_PSK, extra=["--rekey-after", "10"])
        star.c1.wait_ping(star.c2.tunnel_ip, timeout=10)
        result = star.c1.ping(star.c2.tunnel_ip, count=46, interval=0.5)
    finally:
        rec.close()
    assert result.received >= 44  # a rekey may cost at most a packet in flight
    recs, summary = json_records(dissect(pcap, "--json", "--keylog", keys))
    data = [r for r in recs if r["mode"] == "v2" and r["type"] == "DATA"]
    assert data and all(r["status"] == "ok" for r in data), \
        [r for r in data if r["status"] != "ok"][:3]
    sessions = [s for s in summary["v2"]["sessions"] if s["decrypted"]]
    assert len(sessions) >= 3, sessions       # ~24 s of traffic, 10 s sessions
    assert all(s["client_index"] and s["server_index"] for s in sessions)
    inner = [s for r in data for s in r["packets"]]
    assert sum("echo-request" in s for s in inner) >= result.received
