"""camex-dissect on the four real captures of the legacy C implementation.

The captures live in tests/vectors/captures (override with $CAMEX_VECTORS).
They hold only the FIRST fragment of each fragmented datagram (the capture
filter dropped the rest), so those datagrams are reported as incomplete;
every complete encrypted datagram must authenticate.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.utils import rdpcap

from camex.dissect import cli as dissect

REPO = Path(__file__).resolve().parents[2]
VECTORS = Path(os.environ.get("CAMEX_VECTORS") or REPO / "tests" / "vectors" / "captures")
PSKS = ["--psk", "demo-global-secret", "--psk", "per-client-secret-c2"]
CAPTURES = ["upstream-manual-plain.pcap", "upstream-manual-enc.pcap",
            "upstream-auto-plain.pcap", "upstream-auto-enc.pcap"]
# complete camex datagrams / datagrams whose later fragments are missing
EXPECTED = {"upstream-manual-plain.pcap": (104, 46), "upstream-manual-enc.pcap": (106, 44),
            "upstream-auto-plain.pcap": (116, 34), "upstream-auto-enc.pcap": (113, 37)}


def run_json(capsys, *args):
    rc = dissect.main([*args, "--json"])
    out, err = capsys.readouterr()
    lines = [json.loads(x) for x in out.splitlines()]
    assert lines and "summary" in lines[-1]
    return rc, lines[:-1], lines[-1]["summary"], err


def scapy_counts(path):
    """Independent count with Scapy: (complete UDP datagrams, first fragments)."""
    complete = frags = 0
    for p in rdpcap(str(path)):
        ip = p[IP]
        if ip.flags.MF or ip.frag:
            frags += 1
        elif UDP in ip:
            complete += 1
    return complete, frags


def test_vectors_dir_present():
    assert all((VECTORS / c).is_file() for c in CAPTURES), f"captures not found in {VECTORS}"


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_decodes_completely_and_authenticates(capsys, name):
    path = VECTORS / name
    rc, recs, summary, err = run_json(capsys, str(path), *PSKS)
    assert rc == 0 and err == ""
    complete = [r for r in recs if r["status"] != "incomplete"]
    incomplete = [r for r in recs if r["status"] == "incomplete"]
    assert (len(complete), len(incomplete)) == EXPECTED[name] == scapy_counts(path)
    assert summary["datagrams"] == len(recs) == summary["frames"] == 150
    assert summary["failures"] == 0
    assert all(r["status"] == "ok" for r in complete)
    encrypted = name.endswith("-enc.pcap")
    assert all(r["mode"] == ("encrypted" if encrypted else "plaintext") for r in recs)
    if encrypted:
        assert all(r.get("key") for r in complete)   # every one was authenticated
        assert summary["status"] == {"ok": EXPECTED[name][0], "incomplete": EXPECTED[name][1]}
    assert {r["type"] for r in complete} == ({"REGISTER", "DATA", "CONFIG"} if "auto" in name
                                             else {"REGISTER", "DATA"})
    # the inner packets are what the lab sent: ping between the tunnel addresses
    summaries = " ".join(r.get("summary", "") for r in complete)
    assert "10.0.0.2 > 10.0.0.3 echo-request" in summaries
    assert "10.0.0.3 > 10.0.0.2 echo-reply" in summaries or "10.0.0.3 > 10.0.0.2 echo-request" in summaries
    # two clients, each named by what it registered
    names = sorted(n for c in summary["clients"] for n in c["names"])
    assert names == (["C1", "C2"] if "auto" in name else ["10.0.0.2", "10.0.0.3"])
    assert sum(c["datagrams"] for c in summary["clients"]) == 150


def test_per_client_keys_seen_in_auto_enc(capsys):
    _, recs, summary, _ = run_json(capsys, str(VECTORS / "upstream-auto-enc.pcap"), *PSKS)
    by_name = {c["names"][0]: c for c in summary["clients"]}
    assert by_name["C1"]["keys"] != by_name["C2"]["keys"]
    assert len(by_name["C1"]["keys"]) == len(by_name["C2"]["keys"]) == 1


def test_missing_per_client_key_is_reported(capsys):
    _, recs, summary, _ = run_json(capsys, str(VECTORS / "upstream-auto-enc.pcap"),
                                   "--psk", "demo-global-secret")
    nokey = [r for r in recs if r["status"] == "no-key"]
    assert nokey and all(r["client"].startswith("10.250.1.2:") for r in nokey)
    assert summary["failures"] == len(nokey) == summary["status"]["no-key"]


def test_without_passphrase_nothing_is_claimed_authenticated(capsys):
    _, recs, summary, _ = run_json(capsys, str(VECTORS / "upstream-manual-enc.pcap"))
    assert {r["status"] for r in recs} == {"sealed", "incomplete"}
    assert not any(r.get("key") for r in recs)


def test_text_output_one_line_per_datagram_and_summary(capsys):
    rc = dissect.main([str(VECTORS / "upstream-auto-enc.pcap"), *PSKS])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    body = [ln for ln in out if not ln.startswith(("summary:", "  "))]
    assert len(body) == 150
    first = body[0]
    assert "10.250.0.2:44877 > 10.250.0.1:7000" in first and "REGISTER seq=0 len=37" in first
    assert "CX2P REGISTER MODE=AUTO CLIENT_ID=C1" in first
    summary = "\n".join(out[150:])
    assert "0 failures" in summary and "37 incomplete" in summary
    assert "(C1)" in summary and "(C2)" in summary


def test_write_decrypted_inner_pcap_and_reread(tmp_path, capsys):
    out = tmp_path / "inner.pcap"
    rc, recs, summary, _ = run_json(capsys, str(VECTORS / "upstream-manual-enc.pcap"), *PSKS,
                                    "-w", str(out))
    assert rc == 0
    data = [r for r in recs if r["type"] == "DATA" and r["status"] == "ok"]
    pkts = rdpcap(str(out))
    assert len(pkts) == len(data) == summary["written"] > 50
    # raw-IP link type, so Wireshark/tcpdump show the inner IP packets
    assert out.read_bytes()[20:24] == (101).to_bytes(4, "little")
    from camex.dissect.inner import summary as inner_summary
    # (the line's summary is Scapy's for IPv4, camex.dissect.inner's for
    # IPv6, whose Scapy summary leaves ICMPv6 addresses out)
    for rec, pkt in zip(data, pkts):
        assert inner_summary(bytes(pkt)) == rec["summary"]
        assert pkt.version == 6 or pkt.summary() == rec["summary"]
        assert abs(float(pkt.time) - rec["time"]) < 1e-6
    # and camex-dissect itself reads what it wrote (raw IP link type)
    rc2 = dissect.main([str(out), "--json"])
    assert rc2 == 0
    capsys.readouterr()


def test_write_plaintext_capture_keeps_original_lengths(tmp_path, capsys):
    out = tmp_path / "plain.pcap"
    run_json(capsys, str(VECTORS / "upstream-manual-plain.pcap"), "-w", str(out))
    from scapy.utils import RawPcapReader
    lens = [(meta.caplen, meta.wirelen) for _, meta in RawPcapReader(str(out))]
    truncated = [x for x in lens if x[0] < x[1]]
    assert truncated and all(x == (1472, 1500) for x in truncated)


def test_console_script_end_to_end(tmp_path):
    exe = Path(sys.executable).with_name("camex-dissect")
    out = subprocess.run([str(exe), str(VECTORS / "upstream-auto-plain.pcap")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[1:3] == ["10.250.0.2:51733", ">"]
    assert any(ln.startswith("summary: 150 frames, 150 camex datagrams, 0 failures") for ln in lines)
