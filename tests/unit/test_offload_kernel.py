"""camex.io.gso and camex.io.offload against the running kernel.

UDP GSO/GRO on 127.0.0.1 sockets; the TUN offloads in a private network
namespace made by a child process (unshare(CLONE_NEWNET)), so nothing
outside the test sees a packet. Needs root (CI runs as root)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

from camex.base import netpkt
from camex.io import gso
from camex.v2 import framing

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def udp_pair():
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.bind(("127.0.0.1", 0))
    r.settimeout(2)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(r.getsockname())
    return s, r


def test_this_kernel_has_udp_gso_and_gro():
    # The host of the benchmarks (Linux 6.x): a failure here means the fast
    # path silently fell back, and every figure in docs/FASTPATH.md is off.
    f = gso.probe()
    assert f.udp_gso and f.udp_gro


def test_gso_send_arrives_as_separate_datagrams_without_gro():
    s, r = udp_pair()
    ds = [bytes([i]) * 1200 for i in range(7)] + [b"tail"]
    sender = gso.Sender(s, True)
    sender.send(ds)
    assert sender.sends == 1
    got = [r.recv(65535) for _ in ds]
    assert got == ds


def test_a_glued_frame_goes_out_as_its_datagrams():
    """A BULK frame leaves a core as one gso.Run (glue_frame); on the wire
    it is exactly cut_frame's datagrams: one send when it fits the kernel's
    limits (65,507 bytes: 44 full datagrams and a shorter 45th of up to
    739), two when it does not, one by one without GSO."""
    head = bytes([0xC2, 6, 0, 0]) + bytes(range(16))
    for body_len, sends in ((30000, 1), (44 * 1452 + 1, 1), (44 * 1452 + 719, 1),
                            (44 * 1452 + 720, 2), (45 * 1452 + 1, 2), (1000, 1)):
        body = os.urandom(body_len)
        want = framing.cut_frame(head, body, 1472)
        for use_gso in (True, False):
            s, r = udp_pair()
            r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sender = gso.Sender(s, use_gso)
            sender.send([b"before", framing.glue_frame(head, body, 1472), b"after"])
            got = [r.recv(65535) for _ in range(len(want) + 2)]
            assert got == [b"before"] + want + [b"after"], (body_len, use_gso)
            assert sender.sends == (sends + 2 if use_gso else len(want) + 2)
            # A server's outbox: (datagram, address) pairs; a frame alone too.
            sender = gso.Sender(s, use_gso)
            sender.send_grouped([(framing.glue_frame(head, body, 1472), r.getsockname())])
            assert [r.recv(65535) for _ in want] == want
            assert sender.sends == (sends if use_gso else len(want))


def test_gro_receive_splits_a_gso_burst():
    s, r = udp_pair()
    assert gso.enable_gro(r)
    ds = [os.urandom(1000) for _ in range(20)] + [os.urandom(10)]
    gso.Sender(s, True).send(ds)
    recv = gso.receiver(r)
    got = []
    while len(got) < len(ds):
        batch, addr = recv()
        got += [bytes(d) for d in batch]
    assert got == ds
    assert addr == s.getsockname()


def test_gro_receiver_hands_a_burst_over_whole_with_its_size():
    """What the daemons read (gso.gro_receiver): one GSO burst is one
    receive, its datagrams' size beside it and the sender's canonical
    address, on an IPv4 socket and on the server's dual-stack one; a lone
    datagram comes with size 0."""
    from camex.io import udp

    for r in (socket.socket(socket.AF_INET, socket.SOCK_DGRAM), udp.server_socket(0)):
        try:
            if r.family == socket.AF_INET:
                r.bind(("127.0.0.1", 0))
            port = r.getsockname()[1]
            r.setblocking(True)
            assert gso.enable_gro(r)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect(("127.0.0.1", port))
            recv = gso.gro_receiver(r)
            ds = [os.urandom(1000) for _ in range(20)] + [os.urandom(10)]
            gso.Sender(s, True).send(ds)
            data, size, addr = recv()
            assert (size, data) == (1000, b"".join(ds))
            assert addr == s.getsockname()
            s.send(b"lone")
            assert recv() == (b"lone", 0, s.getsockname())
            s.close()
        finally:
            r.close()


def test_sender_groups_per_destination_and_falls_back_without_gso():
    a, ra = udp_pair()
    rb = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rb.bind(("127.0.0.1", 0))
    rb.settimeout(2)
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pairs = [(b"a%d" % i + bytes(500), ra.getsockname()) for i in range(3)]
    pairs += [(b"b%d" % i + bytes(500), rb.getsockname()) for i in range(3)]
    pairs.insert(2, pairs.pop())  # interleave destinations
    for on in (True, False):
        sender = gso.Sender(srv, on)
        sender.send_grouped(pairs)
        assert sender.sends == (2 if on else 6)
        assert [ra.recv(9999)[:2] for _ in range(3)] == [b"a0", b"a1", b"a2"]
        assert sorted(rb.recv(9999)[:2] for _ in range(3)) == [b"b0", b"b1", b"b2"]


# --------------------------------------------------------------- TUN in a netns

CHILD = textwrap.dedent(r'''
    import ctypes, json, os, select, socket, struct, sys, time
    sys.path.insert(0, REPO)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.unshare(0x40000000) == 0, "unshare(CLONE_NEWNET) failed"
    from pyroute2 import IPRoute
    from camex.base import netpkt
    from camex.io import gso, offload
    from camex.base.contract import SuperPacket
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.packet import Raw

    out = {}
    tun = offload.open_tun(None, tso=True)
    out["kind"] = type(tun).__name__
    out["uso"] = tun.uso
    with IPRoute() as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=lo, state="up")
        idx = ipr.link_lookup(ifname=tun.name)[0]
        ipr.addr("add", index=idx, address="10.9.0.1", prefixlen=24)
        ipr.link("set", index=idx, state="up", mtu=1500)

    def read_all(timeout=1.0):
        got = []
        end = time.time() + timeout
        while time.time() < end:
            r = tun.read_super()
            if r is None:
                time.sleep(0.01)
                continue
            got.append((tuple(r[0]), bytes(r[1])))
        return got

    def snmp(key):
        for line in open("/proc/net/snmp"):
            pass
        lines = [l.split() for l in open("/proc/net/snmp") if l.startswith("Tcp:")]
        return int(lines[1][lines[0].index(key)])

    # 1. A UDP super-send (UDP_SEGMENT) through a USO TUN comes out as one
    #    read; segment() cuts it into datagrams with correct checksums.
    read_all(0.3)  # drain router solicitations etc.
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect(("10.9.0.2", 9999))
    gso.Sender(u, True).send([bytes([i]) * 1000 for i in range(10)])
    reads = [(h, p) for h, p in read_all(0.5) if p[0] >> 4 == 4 and p[9] == 17]
    out["udp_reads"] = len(reads)
    out["udp_gso_types"] = sorted({h[1] for h, _ in reads})
    segs = []
    for h, p in reads:
        segs += [bytes(s) for s in netpkt.segment(netpkt.VnetHdr(h), p)]
    ok = []
    for s in segs:
        q = IP(s); del q[IP].chksum; del q[UDP].chksum
        ok.append(bytes(q) == s)
    out["udp_segments"] = len(segs)
    out["udp_checksums_ok"] = all(ok)

    # 2. A merged TCP train written with a GSO header reaches the kernel's
    #    TCP, which verifies the checksum: a valid train to a closed port
    #    draws a RST; a corrupted one is counted as InCsumErrors instead.
    def train(corrupt):
        pkts, s = [], 1000
        for i in range(4):
            pay = bytes([65 + i]) * 1200
            pkts.append(bytes(IP(src="10.9.0.2", dst="10.9.0.1", id=i) /
                        TCP(sport=3333, dport=4444, seq=s, ack=1, flags="A") / Raw(pay)))
            s += len(pay)
        if corrupt:
            b = bytearray(pkts[2]); b[200] ^= 1; pkts[2] = bytes(b)
        return pkts

    for corrupt in (False, True):
        before = snmp("InCsumErrors")
        writes = list(netpkt.coalesce(train(corrupt)))
        assert len(writes) == 1 and netpkt.parse_vnet(writes[0][0]).gso_type == netpkt.GSO_TCPV4
        tun.write_batch(train(corrupt))
        rst = [p for h, p in read_all(0.5) if p[0] >> 4 == 4 and p[9] == 6
               and IP(p)[TCP].flags.R]
        key = "corrupt" if corrupt else "valid"
        out[key + "_rst"] = len(rst)
        out[key + "_csum_errors"] = snmp("InCsumErrors") - before
        if rst:
            out[key + "_rst_seq"] = IP(rst[0])[TCP].seq
            out[key + "_rst_ack"] = IP(rst[0])[TCP].ack

    # 2b. Small UDP datagrams of one flow merge into one USO write; the
    #     kernel hands them to the socket one by one. A corrupt one is not
    #     merged (its checksum is checked first) and the kernel drops it.
    def udp_snmp(key):
        lines = [l.split() for l in open("/proc/net/snmp") if l.startswith("Udp:")]
        return int(lines[1][lines[0].index(key)])
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("10.9.0.1", 7777))
    rx.settimeout(0.5)
    dgrams = [bytes(IP(src="10.9.0.2", dst="10.9.0.1", id=i) / UDP(sport=6666, dport=7777)
                    / Raw(bytes([48 + i]) * 40)) for i in range(6)]
    bad = bytearray(dgrams[4]); bad[-1] ^= 1; dgrams[4] = bytes(bad)
    writes = list(netpkt.coalesce(dgrams))
    out["udp_merge_writes"] = [(netpkt.parse_vnet(v).gso_type, len(b)) for v, b in writes]
    before = udp_snmp("InCsumErrors")
    tun.write_batch(dgrams)
    got = []
    try:
        while True:
            got.append(rx.recv(100))
    except socket.timeout:
        pass
    out["udp_merge_got"] = [g[:1].decode() + str(len(g)) for g in got]
    out["udp_merge_csum_errors"] = udp_snmp("InCsumErrors") - before
    out["uso_writes"] = tun.uso_writes

    # 3. TSO/USO can be switched at run time: off, the kernel cuts the same
    #    burst itself (ten reads, no GSO type); on again, one read, kept
    #    whole by read_items() as a (header, super-packet) pair.
    tun.set_tso(False)
    read_all(0.2)
    gso.Sender(u, True).send([bytes([i]) * 1000 for i in range(10)])
    r = [(h, p) for h, p in read_all(0.5) if p[0] >> 4 == 4 and p[9] == 17]
    out["off_reads"] = len(r)
    out["off_types"] = sorted({h[1] for h, _ in r})
    tun.set_tso(True)
    gso.Sender(u, True).send([bytes([i]) * 1000 for i in range(10)])
    items = []
    end = time.time() + 0.5
    while time.time() < end:
        got = tun.read_items()
        if got is None:
            time.sleep(0.01)
            continue
        items += [x for x in got if type(x) is SuperPacket or (x[0] >> 4 == 4 and x[9] == 17)]
    out["on_items"] = [type(x).__name__ for x in items]

    # 4. GSO cannot IP-fragment: datagrams above the path MTU fail with
    #    EMSGSIZE; the Sender then sends them one by one (the kernel
    #    fragments each) and remembers the limit.
    tun.set_tso(False)
    read_all(0.2)
    snd = gso.Sender(u, True)
    snd.send([bytes([i]) * 1600 for i in range(5)])
    frags = [p for h, p in read_all(0.5) if p[0] >> 4 == 4 and p[9] == 17]
    out["big_max_size"] = snd.max_sizes[0]
    out["big_fragments"] = len(frags)
    out["big_gso_still_on"] = snd.gso
    print(json.dumps(out))
''')


def run_child():
    res = subprocess.run([sys.executable, "-c", f"REPO = {REPO!r}\n" + CHILD],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_tun_offloads_in_a_private_namespace():
    out = run_child()
    assert out["kind"] == "OffloadTun" and out["uso"]
    # USO: ten 1000-byte datagrams came out of the TUN as one super-packet.
    assert out["udp_reads"] == 1 and out["udp_gso_types"] == [netpkt.GSO_UDP_L4]
    assert out["udp_segments"] == 10 and out["udp_checksums_ok"]
    # The merged valid train is accepted as ONE packet: TCP answers it with
    # one RST (four separate segments would draw four), whose sequence is
    # the train's acknowledgment number (RFC 793 reset generation).
    assert out["valid_rst"] == 1 and out["valid_csum_errors"] == 0
    assert out["valid_rst_seq"] == 1
    # The corrupted one is dropped by the kernel's checksum check.
    assert out["corrupt_rst"] == 0 and out["corrupt_csum_errors"] >= 1
    # UDP: 0-3 merged into one USO write (header + 4 payloads), the corrupt
    # 4 alone, 5 alone;
    # the socket gets 0, 1, 2, 3 and 5 (40 bytes each), 4 is dropped.
    assert out["uso_writes"]
    assert out["udp_merge_writes"] == [[netpkt.GSO_UDP_L4, 5], [netpkt.GSO_NONE, 1],
                                       [netpkt.GSO_NONE, 1]]
    assert out["udp_merge_got"] == ["040", "140", "240", "340", "540"]
    assert out["udp_merge_csum_errors"] == 1
    # TSO/USO off at run time: ten plain datagrams; on again: one pair.
    assert out["off_reads"] == 10 and out["off_types"] == [netpkt.GSO_NONE]
    assert out["on_items"] == ["SuperPacket"]
    # Over the MTU: GSO refused, the five datagrams still leave (2 fragments
    # each), and GSO stays on for sizes that fit.
    assert out["big_max_size"] == 1599 and out["big_fragments"] == 10
    assert out["big_gso_still_on"]
