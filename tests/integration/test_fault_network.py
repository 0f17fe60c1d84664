"""Network faults between client and server: loss and reordering, NAT
rebinding, and the MTU (full-size packets cross unfragmented; an oversized
one gets the right ICMP answer). Each test prints its measured figure.

No netem on this kernel: loss is an nftables `numgen random` rule in the
server's namespace; reordering is a userspace UDP relay in the middle
namespace (lab.faults.ReorderRelay) that holds back 5% of the datagrams
behind the next three — real reordering on the wire, made in userspace.
"""

import re
import time

import pytest

from lab import attacks as A
from lab import faults as F
from lab.daemons import Camex, GLOBAL_PSK, vectors_config

pytestmark = pytest.mark.lab

PORT = 7000


def _start(lab, encrypt=True, auto=True, protocol="legacy"):
    cx = F.LegacyCamex(lab) if protocol == "legacy" else Camex(lab, protocol=protocol)
    ctl = F.ctl_path(lab, "srv")
    conf = cx.write_config(vectors_config(c2_psk=None))
    psk = GLOBAL_PSK if encrypt else None
    srv = cx.start_server(encrypt=encrypt, psk=psk, extra=["--control-socket", ctl, "-f", conf])
    kw = dict(auto=auto, encrypt=encrypt, psk=psk)
    c1 = cx.start_client(lab.c1, extra=["--control-socket", F.ctl_path(lab, "c1")], **kw)
    c2 = cx.start_client(lab.c2, extra=["--control-socket", F.ctl_path(lab, "c2")], **kw)
    lab.c1.wait_ping("10.0.0.3", timeout=10)
    return cx, srv, ctl, c1, c2


def test_loss_and_reordering(chain):
    lab = chain
    lab.c1.server_ip = "192.168.1.1"  # C1 talks to the relay in `mid`
    relay = F.ReorderRelay(lab.mid, "192.168.1.1", "10.250.0.1", PORT, share=0.05, hold=3)
    try:
        # Manual clients: their TUN MTU leaves room for the overhead (see the
        # MTU test for auto clients).
        cx, srv, ctl, c1, c2 = _start(lab, auto=False)
        F.nft(lab.server, F.loss_rules("mid", 5))
        ping = lab.c1.ping("10.0.0.3", count=200, interval=0.01, wait=1)
        xfer = F.tcp_transfer(lab.c1, lab.c2, "10.0.0.3", 2 << 20, timeout=120)
        counters = F.nft_counters(lab.server)
        c1_drops = F.status(F.ctl_path(lab, "c1"))["drops"]
        srv_drops = F.status(ctl)["drops"]
    finally:
        relay.close()
    lost = counters["lost_in"]["packets"] + counters["lost_out"]["packets"]
    seen = counters["seen_in"]["packets"] + counters["seen_out"]["packets"]
    print(f"\n5% loss each way + 5% reordering (encrypted, manual): nft dropped {lost} of {seen} "
          f"datagrams ({100 * lost / max(seen, 1):.1f}%), relay reordered {relay.reordered} of "
          f"{relay.forwarded} (lost {relay.lost}); ping {ping.received}/{ping.transmitted} "
          f"({ping.loss_pct:.1f}% loss); TCP 2 MiB in {xfer['seconds']:.2f} s "
          f"({xfer['bytes'] * 8 / xfer['seconds'] / 1e6:.1f} Mbit/s), sha256 "
          f"{'equal' if xfer['ok'] else 'DIFFERENT'}; replay drops: client "
          f"{c1_drops.get('replay', 0)}, server {srv_drops.get('replay', 0)}")
    assert lost > 0 and relay.reordered > 0, "the faults were not applied"
    assert ping.received >= 150
    assert xfer["ok"] and xfer["bytes"] == 2 << 20, xfer
    # A datagram the relay holds back comes at most `hold` sequence numbers
    # late, well inside the 64-wide window, so none may be taken for a
    # replay. That holds only while the relay itself loses nothing: a held
    # datagram released after a gap it made comes as late as the gap is long.
    assert relay.lost == 0, f"the relay lost {relay.lost} datagrams: its reordering is unbounded"
    assert c1_drops.get("replay", 0) == 0 and srv_drops.get("replay", 0) == 0


@pytest.mark.parametrize("protocol", ["legacy", "v2"])
def test_nat_rebinding(chain, protocol):
    """The NAT in front of C1 forgets its mapping and picks a new source
    port mid-stream; traffic resumes."""
    lab = chain
    F.nft(lab.mid, F.snat_rules(20000, 20099))
    cx, srv, ctl, c1, c2 = _start(lab, protocol=protocol)
    before = F.client_entry(ctl, "10.0.0.2")["endpoint"]
    assert re.fullmatch(r"10\.250\.0\.2:200\d\d", before), before
    assert lab.c1.ping("10.0.0.3", count=3, interval=0.1).received == 3
    t0 = time.monotonic()
    F.rebind_nat(lab.mid, 30000, 30099)
    took = F.time_until_ping(lab.c1, "10.0.0.3", 45, t0)
    after = F.client_entry(ctl, "10.0.0.2")["endpoint"]
    print(f"\nNAT rebinding ({protocol}, encrypted, auto): endpoint {before} -> {after}, traffic resumed "
          f"{took:.1f} s after the rebinding")
    # The client registers again after 5 s of unanswered traffic (the C
    # client waited for 20 s of silence).
    assert took <= 10.0
    assert re.fullmatch(r"10\.250\.0\.2:300\d\d", after), after
    assert [c["address"] for c in F.server_clients(ctl)].count("10.0.0.2") == 1
    assert lab.c2.ping("10.0.0.2", count=3, interval=0.1).received == 3


def _ping_df(ns, dst, size):
    r = ns.run(["ping", "-n", "-c", "1", "-W", "1", "-M", "do", "-s", str(size), dst], timeout=10)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.parametrize("encrypt,auto,protocol", [
    (False, False, "legacy"), (True, False, "legacy"), (True, True, "legacy"),
    (True, False, "v2"), (True, True, "v2")],
    ids=["plaintext-manual", "encrypted-manual", "encrypted-auto-mtu1500", "v2-manual",
         "v2-auto-mtu1500"])
def test_mtu_full_size_unfragmented_and_oversize_answered(star, encrypt, auto, protocol):
    """The TUN MTU leaves room for the tunnel's overhead (flaw 7 of the
    spec), also when the server's configuration offers `mtu=1500` (the
    link MTU) to an auto client."""
    lab = star
    cx = F.LegacyCamex(lab) if protocol == "legacy" else Camex(lab, protocol=protocol)
    # A LAN behind C1 whose packets C1 forwards into the tunnel.
    lan = lab.add_ns("lan")
    lab.veth(lab.c1, "lan", "192.168.50.1/24", lan, "eth0", "192.168.50.2/24")
    with lan.ipr() as ipr:
        ipr.route("add", dst="0.0.0.0/0", gateway="192.168.50.1")
    lab.c1.sysctl("net.ipv4.ip_forward", "1")
    psk = GLOBAL_PSK if encrypt else None
    extra = ["--control-socket", F.ctl_path(lab, "s")]
    if auto:  # [defaults] mtu=1500; manual clients get no file (it would bind their addresses)
        extra += ["-f", cx.write_config(vectors_config(c2_psk=None))]
    cx.start_server(encrypt=encrypt, psk=psk, extra=extra)
    cx.start_client(lab.c1, encrypt=encrypt, psk=psk, auto=auto,
                    extra=["--control-socket", F.ctl_path(lab, "c1")])
    cx.start_client(lab.c2, encrypt=encrypt, psk=psk, auto=auto,
                    extra=["--control-socket", F.ctl_path(lab, "c2")])
    lab.c1.wait_ping("10.0.0.3", timeout=10)
    mtu = F.status(F.ctl_path(lab, "c1"))["mtu"]
    if protocol == "legacy":
        assert mtu == (1429 if encrypt else 1472), (
            f"TUN MTU {mtu}: a full-size inner packet would need a {mtu + (71 if encrypt else 28)}"
            f"-byte outer packet on a 1500-byte path")
    F.nft(lab.server, F.byte_counter_rules(["c1", "c2"]))

    with A.Sniffer(lab.server, "c1", PORT) as sniff:
        rc, out = _ping_df(lab.c1, "10.0.0.3", mtu - 28)
        assert rc == 0, out
        rc, out = _ping_df(lan, "10.0.0.3", mtu - 28)  # forwarded by C1: also full size
        time.sleep(0.2)
    # Only whole datagrams are captured: an outer packet that was
    # fragmented shows up in the `frags` counter instead.
    outer = max((len(p.payload) + 28 for p in sniff.packets), default=None)
    # Bulk TCP too (after the sniffer: with UDP GSO a capture on a veth sees
    # unsegmented super-packets, which never are IP fragments).
    xfer = F.tcp_transfer(lab.c1, lab.c2, "10.0.0.3", 1 << 20, timeout=15)
    frags = F.nft_counters(lab.server)["frags"]["packets"]

    rc1, local = _ping_df(lab.c1, "10.0.0.3", mtu - 27)
    rc2, forwarded = _ping_df(lan, "10.0.0.3", mtu - 27)
    local_said = re.search(r"mtu ?=? ?\d+", local)
    lan_got = re.search(r"From .*", forwarded)
    print(f"\nMTU ({protocol}, {'encrypted' if encrypt else 'plaintext'}, "
          f"{'auto' if auto else 'manual'}): TUN mtu {mtu}; a DF ping of "
          f"{mtu} bytes crosses as {outer}-byte outer packets, {frags} fragments on the "
          f"underlay; {mtu + 1} bytes: local sender told "
          f"{local_said.group(0) if local_said else local!r}, LAN host got "
          f"{lan_got.group(0) if lan_got else forwarded!r}")
    print(f"TCP 1 MiB over the tunnel: {xfer['bytes']} bytes in {xfer['seconds']:.2f} s, "
          f"sha256 {'equal' if xfer['ok'] else 'DIFFERENT'}")
    assert frags == 0, f"TUN MTU {mtu}: full-size packets were fragmented on the underlay"
    assert xfer["ok"], xfer
    assert outer == 1500
    assert rc1 != 0 and re.search(rf"message too long, mtu={mtu}", local), local
    assert rc2 != 0
    assert re.search(rf"From 192\.168\.50\.1 .*Frag needed and DF set \(mtu = {mtu}\)",
                     forwarded), forwarded
