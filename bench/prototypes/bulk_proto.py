"""Prototype of the BULK framing (now docs/PROTOCOL.md §4.7), to MEASURE the
ceiling of the v2 design with camex.io helpers before anyone builds it in.

Not product code: fixed key, no handshake, no replay window, point to point.
Data path: TUN with TSO -> one super-packet per read -> ONE ChaCha20-Poly1305
over it -> cut into 20-byte-header fragments -> one UDP GSO sendmsg ->
(veth) -> UDP GRO recvmsg -> reassemble -> ONE decrypt -> one TUN write with
a GSO vnet header.

    python fastpath-bulk-proto.py bench [--seconds 5] [--plain]
runs two namespaces (lab.netns.PointToPoint), the prototype in each, and
iperf3 a -> b through it; prints Gbit/s and CPU s per GB of both ends.
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305  # noqa: E402

from camex.io import gso, offload  # noqa: E402

HDR = struct.Struct("<BBBBIQBBH")  # C2 06 flags idx | receiver | counter | n 0 0
KEY = bytes(range(32))
S = 1472  # datagram size for a 1500 path


def tunnel(local_cidr: str, peer: str, port: int, plain: bool) -> None:
    from pyroute2 import IPRoute
    tun = offload.open_tun(None, tso=True)
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=tun.name)[0]
        ip, plen = local_cidr.split("/")
        ipr.addr("add", index=idx, address=ip, prefixlen=int(plen))
        ipr.link("set", index=idx, state="up", mtu=1420)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind(("0.0.0.0", port))
    sock.connect((peer, port))
    sock.setblocking(False)
    gso.enable_gro(sock)
    send = gso.Sender(sock, True).send
    recv = gso.receiver(sock)
    aead = ChaCha20Poly1305(KEY)
    reasm = gso.Reassembly()
    counter = 0
    print(f"up {tun.name} {tun.why}", flush=True)

    def on_tun():
        nonlocal counter
        out = []  # every frame of this readiness event: one flush (ACKs batch too)
        for _ in range(64):
            r = tun.read_super()
            if r is None:
                break
            h, pkt = r
            if h.gso_type == gso.GSO_NONE:
                pkts, g = offload.segment(h, pkt), 0
            else:
                pkts, g = [pkt], h.gso_size
            for p in pkts:
                plain_rec = struct.pack("!HH", len(p), g) + bytes(p)
                n = -(-(len(plain_rec) + 16) // (S - 20))
                head = HDR.pack(0xC2, 6, 0, 0, 1, counter, n, 0, 0)
                nonce = bytes(4) + counter.to_bytes(8, "little")
                body = plain_rec if plain else aead.encrypt(nonce, plain_rec, head)
                counter += 1
                out += gso.cut_frame(head, body, S)
        if out:
            send(out)

    def on_sock():
        for _ in range(64):
            try:
                ds, _ = recv()
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                continue
            k, nds = 0, len(ds)
            while k < nds:
                d = ds[k]
                _, _, _, i, rcv, ctr, n, _, _ = HDR.unpack_from(d)
                # Fast path: the whole frame, in order, in this GRO batch.
                if i == 0 and k + n <= nds and HDR.unpack_from(ds[k + n - 1])[3] == n - 1 \
                        and HDR.unpack_from(ds[k + n - 1])[5] == ctr:
                    whole = b"".join(x[20:] for x in ds[k:k + n])
                    k += n
                else:
                    k += 1
                    whole = reasm.add(ctr, i, n, memoryview(d)[20:], 0.0)
                    if whole is None:
                        continue
                head = HDR.pack(0xC2, 6, 0, 0, rcv, ctr, n, 0, 0)
                nonce = bytes(4) + ctr.to_bytes(8, "little")
                rec = whole if plain else aead.decrypt(nonce, whole, head)
                ln, g = struct.unpack_from("!HH", rec)
                p = memoryview(rec)[4:4 + ln]
                if g:
                    ihl = (p[0] & 15) * 4
                    proto = p[9]
                    if proto == 6:
                        hl = ihl + (p[ihl + 12] >> 4) * 4
                        v = gso.pack_vnet(gso.F_NEEDS_CSUM, gso.GSO_TCPV4, hl, g, ihl, 16)
                    else:
                        v = gso.pack_vnet(gso.F_NEEDS_CSUM, gso.GSO_UDP_L4, ihl + 8, g, ihl, 6)
                    tun.write_super(v, [p])
                else:
                    tun.write(p)

    sel = selectors.DefaultSelector()
    sel.register(tun, selectors.EVENT_READ, on_tun)
    sel.register(sock, selectors.EVENT_READ, on_sock)
    while True:
        for key, _ in sel.select(1.0):
            key.data()


def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def bench(seconds: float, plain: bool) -> None:
    from lab.netns import PointToPoint
    from lab.traffic import iperf3
    me = os.path.abspath(__file__)
    with PointToPoint() as lab:
        extra = ["--plain"] if plain else []
        pa = lab.a.spawn([sys.executable, me, "tunnel", "10.8.0.1/24", "10.250.0.2", "9000", *extra])
        pb = lab.b.spawn([sys.executable, me, "tunnel", "10.8.0.2/24", "10.250.0.1", "9000", *extra])
        pa.wait_for_line("up ", timeout=10)
        pb.wait_for_line("up ", timeout=10)
        time.sleep(0.5)
        print(pa.tail(5), pb.tail(5), flush=True)
        lab.a.wait_ping("10.8.0.2", timeout=10)
        c0 = cpu(pa.pid) + cpu(pb.pid)
        spies = []
        if os.environ.get("PYSPY"):
            import subprocess
            for p, n in ((pa, "a"), (pb, "b")):
                spies.append(subprocess.Popen([str(__import__("pathlib").Path(sys.executable).with_name("py-spy")), "record", "-r", "200", "-d", str(int(seconds)), "-f", "raw", "-o", f"{os.environ['PYSPY']}/{n}.txt", "-p", str(p.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        res = iperf3(lab.a, lab.b, "10.8.0.2", seconds=seconds)
        c1 = cpu(pa.pid) + cpu(pb.pid)
        for sp in spies:
            sp.wait()
        ping = lab.a.ping("10.8.0.2", count=10, interval=0.05)
        print(f"BULK prototype {'plain' if plain else 'ChaCha20-Poly1305'}: "
              f"{res.gbps:.3f} Gbit/s, retrans {res.retransmits}, "
              f"{(c1 - c0) / (res.received_bytes / 1e9):.2f} CPU s/GB (both ends), "
              f"rtt {ping.rtt_avg_ms} ms")
        print(pa.tail(3), pb.tail(3))


if __name__ == "__main__":
    if sys.argv[1] == "tunnel":
        tunnel(sys.argv[2], sys.argv[3], int(sys.argv[4]), "--plain" in sys.argv)
    else:
        secs = float(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 5
        bench(secs, "--plain" in sys.argv)
