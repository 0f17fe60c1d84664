"""camex-dissect on the BULK frames of a live v2 tunnel (docs/V2-BULK.md).

A v2 server with a TUN and client C1 (both announcing BULK) carry a TCP
transfer from C1 to the server's tunnel address and one back; the server
writes its session keys with `--keylog`, and C1's underlay link is
recorded in the server's namespace (an AF_PACKET tap writing a pcap, as
tcpdump -w would; UDP GSO runs cross the veth whole, so the capture holds
them glued). What a user sees from `camex-dissect --keylog`: BULK
fragments both ways, frames reassembled and decrypted once each, TSO
super-packets (gso_size > 0) of those TCP flows inside, whose payload
bytes are exactly the bytes sent; and nothing decrypted without the key
log.
"""

import json
import os
import random
import subprocess
import sys
import time

import pytest
from scapy.layers.inet import IP, TCP
from scapy.utils import rdpcap

from lab.capture import PcapRecorder
from lab.daemons import auto_config
from lab.faults import tcp_transfer
from lab.v2lab import GLOBAL, V2Camex

pytestmark = pytest.mark.lab

SIZE = 2 << 20
PORT, BACK = 5311, 5312


def dissect(*args):
    """camex-dissect as a user runs it (the console script of this venv)."""
    exe = os.path.join(os.path.dirname(sys.executable), "camex-dissect")
    res = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return res


def json_records(res):
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    return lines[:-1], lines[-1]["summary"]


def test_dissect_decrypts_the_bulk_frames_of_a_live_tcp_transfer(star, tmp_path):
    cx = V2Camex(star)
    keys, pcap = tmp_path / "server.keys", tmp_path / "bulk.pcap"
    config = cx.write_config(auto_config({"C1": {"local_cidr": "10.0.0.2/24"}}))
    cx.start_server(encrypt=True, psk=GLOBAL, config=config,
                    extra=["--server-tun", "--keylog", keys])
    c1 = cx.start_client(star.c1, wait=False, auto=True, encrypt=True, psk=GLOBAL)
    cx.wait_client(c1)
    star.c1.wait_ping("10.0.0.1", timeout=10)
    rec = PcapRecorder(star.server, "c1", str(pcap), rcvbuf=64 << 20)
    try:
        xfer = tcp_transfer(star.c1, star.server, "10.0.0.1", SIZE, port=PORT)
        back = tcp_transfer(star.server, star.c1, "10.0.0.2", SIZE, port=BACK)
        time.sleep(0.3)
    finally:
        rec.close()
    assert xfer["ok"] and xfer["bytes"] == SIZE, xfer
    assert back["ok"] and back["bytes"] == SIZE, back
    sent = cx.clients()["10.0.0.2"]
    assert sent["bulk_rx_frames"] > 0 and sent["bulk_tx_frames"] > 0   # BULK both ways

    # Without the key log: fragments and frames, nothing opened.
    recs, summary = json_records(dissect(pcap, "--json"))
    bulk = [r for r in recs if r["mode"] == "v2" and r["type"] == "BULK"]
    assert bulk and all(r["status"] == "sealed" and "packets" not in r for r in bulk)
    assert summary["v2"]["bulk"]["complete"] > 0

    # With the server's key log: every BULK frame that is whole in the
    # capture opens; its records are TSO super-packets of this flow.
    inner = tmp_path / "inner.pcap"
    recs, summary = json_records(dissect(pcap, "--json", "--keylog", keys, "-w", inner))
    bulk = [r for r in recs if r["mode"] == "v2" and r["type"] == "BULK"]
    assert all(r["status"] == "ok" for r in bulk), \
        [(r["frame"], r["direction"], r["status"], r.get("detail"), r.get("bulk"))
         for r in bulk if r["status"] != "ok"][:5]
    frames = [r for r in bulk if "packets" in r]
    stats = summary["v2"]["bulk"]
    assert frames and stats["complete"] == len(frames)
    # An AF_PACKET tap in Python may lose a packet under a burst; the
    # daemon's frames are whole on the wire, so nearly all are here.
    assert stats["incomplete"] <= stats["complete"] // 10, stats
    for direction, flow in (("c2s", f"> 10.0.0.1:{PORT}"), ("s2c", f"> 10.0.0.2:{BACK}")):
        mine = [r for r in frames if r["direction"] == direction]
        assert any(x["gso_size"] > 0 for r in mine for x in r["bulk"]["records"]), direction
        assert any(flow in s and "TSO gso_size=" in s for r in mine for s in r["packets"])
    assert any("gso" in r for r in bulk)   # GSO runs were cut back into fragments
    assert summary["failures"] == 0

    # The TCP bytes written to -w are the bytes sent, at their offsets.
    data = random.Random(SIZE).randbytes(SIZE)
    written = rdpcap(str(inner))
    for port in (PORT, BACK):
        isn, checked = None, 0
        for p in written:
            if not p.haslayer(TCP) or p[TCP].dport != port:
                continue
            if p[TCP].flags.S:
                isn = p[TCP].seq
                continue
            payload = bytes(p[TCP].payload)[:p[IP].len - 4 * (p[IP].ihl + p[TCP].dataofs)]
            if isn is None or not payload:
                continue
            off = (p[TCP].seq - isn - 1) % (1 << 32)
            assert payload == data[off:off + len(payload)], f"port {port}: bytes at {off} differ"
            checked += len(payload)
        assert isn is not None and checked >= SIZE // 2, (port, checked)

    # The text a user reads.
    out = dissect(pcap, "--keylog", keys).stdout
    assert "v2 BULK receiver=" in out and "frame complete:" in out
    assert "  v2 BULK: " in out and "TSO gso_size=" in out
