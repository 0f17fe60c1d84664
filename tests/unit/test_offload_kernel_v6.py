"""TCP over IPv6 through a real TUN with offloads (camex.io.offload): the
kernel's TSO6 super-packets are read and cut by netpkt.segment, and merged
TCPv6 writes reach the kernel's TCP. In a private network namespace made by
a child process (unshare(CLONE_NEWNET)) with IPv6 addresses on the TUN
itself; the test plays the remote TCP peer with Scapy-built packets. Needs
root (CI runs as root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from camex.base import netpkt

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = textwrap.dedent(r'''
    import ctypes, json, os, socket, sys, threading, time
    sys.path.insert(0, REPO)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.unshare(0x40000000) == 0, "unshare(CLONE_NEWNET) failed"
    from pyroute2 import IPRoute
    from camex.base import netpkt
    from camex.io import offload
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Raw

    HERE, PEER = "fd00:9::1", "fd00:9::2"
    IFA_F_NODAD = 0x02
    out = {}
    tun = offload.open_tun(None, tso=True)
    out["why"] = tun.why
    with IPRoute() as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=lo, state="up")
        idx = ipr.link_lookup(ifname=tun.name)[0]
        ipr.link("set", index=idx, state="up", mtu=1500)
        ipr.addr("add", index=idx, address=HERE, prefixlen=64, flags=IFA_F_NODAD)
        # Ready when packets to HERE are delivered, not forwarded: the local
        # route, which the kernel adds from a work item after the address
        # (already untentative with NODAD) and the prefix route. A SYN-ACK
        # that beats it is dropped as a forward (Ip6InAddrErrors) and the
        # connect hangs. Poll, no sleep.
        end = time.time() + 10
        while time.time() < end:
            r = ipr.route("get", dst=HERE)
            if r and r[0]["type"] == 2:  # RTN_LOCAL
                break
            time.sleep(0.01)
        else:
            raise SystemExit("no local route to " + HERE)

    def reads(until, timeout=10.0):
        """TCP-over-IPv6 reads (VnetHdr, bytes) until `until(list)` or timeout."""
        got = []
        end = time.time() + timeout
        while time.time() < end and not until(got):
            r = tun.read_super()
            if r is None:
                time.sleep(0.002)
                continue
            h, p = r
            if len(p) >= 60 and p[0] >> 4 == 6 and p[6] == 6:
                got.append((tuple(h), bytes(p)))
        return got

    def write(pkt):
        tun.write(bytes(pkt))

    # The remote end: a listener played by hand.
    c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    c.setblocking(False)
    try:
        c.connect((PEER, 5201))
    except BlockingIOError:
        pass
    (h, syn), = reads(lambda g: g)
    syn = IPv6(syn)
    isn = syn[TCP].seq
    hdr = lambda: IPv6(src=PEER, dst=HERE) / TCP(sport=5201, dport=syn[TCP].sport)
    s = hdr(); s[TCP].flags = "SA"; s[TCP].seq = 1000; s[TCP].ack = isn + 1
    s[TCP].window = 65535; s[TCP].options = [("MSS", 1440), ("WScale", 7)]
    write(s)
    reads(lambda g: any(IPv6(p)[TCP].flags == "A" for _, p in g), 1.0)  # its ACK

    # 1. The kernel sends 60 KB: with TSO6 on, TUN reads are GSO_TCPV6
    #    super-packets; segment() cuts them into MSS-sized packets whose
    #    checksums Scapy must agree with. We ACK what arrives.
    data = os.urandom(60000)
    c.setblocking(True)
    c.settimeout(60)
    # From a thread: sendall may wait for the ACKs this loop sends.
    sender = threading.Thread(target=c.sendall, args=(data,), daemon=True)
    sender.start()
    got_types, sizes, ok, payload = set(), [], True, b""
    # (Ends when the stream is in; the bound is for a stuck kernel: with
    # Scapy parsing each segment thrice, a loaded CI machine needed > 5 s.)
    end = time.time() + 60
    while len(payload) < len(data) and time.time() < end:
        for h, p in reads(lambda g: g, 0.5):
            got_types.add(h[1])
            for seg in netpkt.segment(netpkt.VnetHdr(h), p):
                seg = bytes(seg)
                q = IPv6(seg)
                sizes.append(len(q[TCP].payload))
                del q[TCP].chksum
                ok = ok and bytes(q) == seg
                off = (IPv6(seg)[TCP].seq - isn - 1) & 0xFFFFFFFF
                more = bytes(IPv6(seg)[TCP].payload)
                # A retransmission may overlap what is in (TSO cuts it anew):
                # take its new tail, or the stream stalls on our old ACK.
                if off <= len(payload) < off + len(more):
                    payload += more[len(payload) - off:]
            a = hdr(); a[TCP].flags = "A"; a[TCP].seq = 1001
            a[TCP].ack = (isn + 1 + len(payload)) & 0xFFFFFFFF; a[TCP].window = 65535
            write(a)
    sender.join(60)
    out["tso6_gso_types"] = sorted(got_types)
    out["tso6_max_segment"] = max(sizes) if sizes else 0
    out["tso6_checksums_ok"] = ok
    out["tso6_payload_ok"] = payload == data

    # 2. The peer sends a train of four segments; coalesce() merges them into
    #    one GSO_TCPV6 write, and the application reads all of it.
    train, seq = [], 1001
    for i in range(4):
        pay = bytes([65 + i]) * 1400
        t = hdr(); t[TCP].flags = "A"; t[TCP].seq = seq
        t[TCP].ack = (isn + 1 + len(data)) & 0xFFFFFFFF; t[TCP].window = 65535
        train.append(bytes(t / Raw(pay)))
        seq += len(pay)
    writes = list(netpkt.coalesce(train))
    out["train_writes"] = [netpkt.parse_vnet(v).gso_type for v, _ in writes]
    tun.write_batch(train)
    c.settimeout(30)
    got = b""
    while len(got) < 5600:
        more = c.recv(65536)
        if not more:
            break
        got += more
    out["train_received"] = got == b"".join(bytes([65 + i]) * 1400 for i in range(4))
    print(json.dumps(out))
''')


def test_tcp6_through_a_tun_with_tso6():
    res = subprocess.run([sys.executable, "-c", f"REPO = {REPO!r}\n" + CHILD],
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert "TSO6" in out["why"]
    # The kernel handed over TCPv6 super-packets (not only single segments),
    # cut here into segments of at most the peer's MSS (1440), with TCP
    # checksums Scapy computes the same, carrying the whole stream.
    assert netpkt.GSO_TCPV6 in out["tso6_gso_types"]
    assert out["tso6_max_segment"] == 1440
    assert out["tso6_checksums_ok"] and out["tso6_payload_ok"]
    # The peer's four segments went in as one GSO_TCPV6 write, all received.
    assert out["train_writes"] == [netpkt.GSO_TCPV6]
    assert out["train_received"]
