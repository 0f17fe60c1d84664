"""Relay benchmark: C1 -> server -> C2 through camex, iperf3 TCP.
Prints Gbit/s and daemon CPU seconds per GB (robust to a loaded host).
usage: python relay.py [--encrypt] [--seconds N] [--pyspy DIR] [--base]"""
import argparse, os, subprocess, sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from lab.netns import StarTopology
from lab.daemons import Camex, GLOBAL_PSK
from lab.traffic import iperf3

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

ap = argparse.ArgumentParser()
ap.add_argument("--encrypt", action="store_true")
ap.add_argument("--seconds", type=float, default=5)
ap.add_argument("--pyspy")
ap.add_argument("--streams", type=int, default=1)
ap.add_argument("--udp")
ap.add_argument("--base", action="store_true", help="run the committed baseline copy")
ap.add_argument("--log")
a = ap.parse_args()
if a.base:
    os.environ["CAMEX"] = "/tmp/fp/camex-base"
with StarTopology() as lab:
    cx = Camex(lab)
    psk = GLOBAL_PSK if a.encrypt else None
    srv = cx.start_server(encrypt=a.encrypt, psk=psk)
    ex = ["--protocol", "legacy"] if os.environ.get("LEGACY") else []
    c1 = cx.start_client(lab.c1, encrypt=a.encrypt, psk=psk, extra=ex)
    c2 = cx.start_client(lab.c2, encrypt=a.encrypt, psk=psk, extra=ex)
    r = lab.c1.wait_ping("10.0.0.3", timeout=10)
    if os.environ.get("TXQLEN"):
        for ns in (lab.c1, lab.c2):
            with ns.ipr() as ipr:
                idx = ipr.link_lookup(ifname="tun0")[0]
                ipr.link("set", index=idx, txqlen=int(os.environ["TXQLEN"]))
    procs = ((c1, "client1"), (srv, "server"), (c2, "client2"))
    spies = []
    if a.pyspy:
        os.makedirs(a.pyspy, exist_ok=True)
        for p, n in procs:
            spies.append(subprocess.Popen([str(__import__("pathlib").Path(sys.executable).with_name("py-spy")), "record", "-r", "200", "-d", str(int(a.seconds)), "-f", "raw", "-o", f"{a.pyspy}/{n}.txt", "-p", str(p.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    extra = ("-P", str(a.streams)) if a.streams > 1 else ()
    if a.udp:
        extra += ("-l", a.udp)
    c0 = [cpu(p.pid) for p, _ in procs]
    res = iperf3(lab.c1, lab.c2, "10.0.0.3", seconds=a.seconds, extra=extra, udp_bitrate="0" if a.udp else None)
    c1_ = [cpu(p.pid) for p, _ in procs]
    for s in spies: s.wait()
    ping = lab.c1.ping("10.0.0.3", count=5, interval=0.2)
    gb = res.received_bytes / 1e9
    per = " ".join(f"{n}={(b - a_) / gb:.1f}" for (p, n), a_, b in zip(procs, c0, c1_))
    print(f"{'base' if a.base else 'new '} {'enc  ' if a.encrypt else 'plain'} relay: {res.gbps:.3f} Gbit/s "
          f"retrans={res.retransmits} rtt={ping.rtt_avg_ms}ms cpu-s/GB {per}")
    if os.environ.get("STATS"):
        for ns in (lab.c1, lab.server, lab.c2):
            out = ns.run(["nstat", "-az"]).stdout
            keep = [l.split()[:2] for l in out.splitlines() if any(k in l for k in ("UdpRcvbufErrors", "UdpSndbufErrors", "UdpInErrors", "TcpRetransSegs", "TcpInCsumErrors", "TcpExtTCPBacklogDrop", "IpOutDiscards"))]
            keep = [k for k in keep if k[1] != "0"]
            links = ns.run(["ip", "-s", "-o", "link"]).stdout
            drops = [l.split()[1] + " " + " ".join(l.split("TX:")[1].split()[8:12]) for l in links.splitlines() if "tun" in l or "eth0" in l or "c1" in l or "c2" in l]
            print("  ", ns.role, keep, drops)
    for p, n in procs:
        errs = [l for l in p.stderr().splitlines() if "WARN" in l or "ERROR" in l or "Trace" in l or "data path" in l]
        if errs: print(" ", n, errs[:3])
