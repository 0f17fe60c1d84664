"""Helpers for the tests that run INSIDE a virtme-ng guest (vmcase_*.py).

These files are not collected by the host's pytest (their names do not match
test_*.py); lab/vm/guest.sh passes them explicitly to the guest's pytest.
The guest boots a Debian kernel with the host's filesystem shared, so the
venv, pyroute2 and the iproute2 tools are the host's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import subprocess
import time

from pyroute2 import IPRoute

KO = os.environ.get("CAMEX_KO", "/work/main/kmod/camex.ko")
DEV = "/dev/camex"
IFNAME = "camex"
LOCAL = "10.77.0.1"      # the guest's address on camex
PEER = "10.77.0.2"       # the far end, reached through /dev/camex
PREFIX = 24


# ---- module -----------------------------------------------------------------

def module_loaded() -> bool:
    with open("/proc/modules") as f:
        return any(line.split()[0] == "camex" for line in f)


def insmod(**params) -> subprocess.CompletedProcess:
    args = [f"{k}={v}" for k, v in params.items()]
    return subprocess.run(["insmod", KO, *args], capture_output=True, text=True)


def rmmod() -> subprocess.CompletedProcess:
    return subprocess.run(["rmmod", "camex"], capture_output=True, text=True)


def wait_for(cond, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def loaded(up: bool = True, **params):
    """Load camex.ko (with params), address and raise the link, unload after."""
    assert not module_loaded(), "camex already loaded by an earlier test"
    res = insmod(**params)
    assert res.returncode == 0, f"insmod failed: {res.stderr}"
    try:
        wait_for(lambda: os.path.exists(DEV), what=DEV)
        # The link is IPv4-only: the driver drops (and counts) the IPv6
        # router solicitations the kernel would send, which would make the
        # tx_dropped counts of the tests depend on timing.
        v6 = f"/proc/sys/net/ipv6/conf/{IFNAME}/disable_ipv6"
        if os.path.exists(v6):
            with open(v6, "w") as f:
                f.write("1")
        if up:
            with IPRoute() as ipr:
                idx = ipr.link_lookup(ifname=IFNAME)[0]
                ipr.addr("add", index=idx, address=LOCAL, prefixlen=PREFIX)
                ipr.link("set", index=idx, state="up")
        yield
    finally:
        # Loop: a test may have left an fd open in a dying thread.
        for _ in range(50):
            if rmmod().returncode == 0 or not module_loaded():
                break
            time.sleep(0.05)


# ---- link state -------------------------------------------------------------

def link() -> dict:
    """The camex link as netlink reports it: attrs flattened into a dict."""
    with IPRoute() as ipr:
        msg = ipr.get_links(ifname=IFNAME)[0]
    info = dict(msg["attrs"])
    info["flags"] = msg["flags"]
    info["ifi_type"] = msg["ifi_type"]
    return info


def stats() -> dict:
    return dict(link()["IFLA_STATS64"])


def carrier() -> int:
    return link()["IFLA_CARRIER"]


# ---- packets ----------------------------------------------------------------

def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 1,
         ttl: int = 64) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0,
                      ttl, proto, 0, socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + payload


def udp(src: str, dst: str, sport: int, dport: int, data: bytes) -> bytes:
    length = 8 + len(data)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, length)
    seg = struct.pack("!HHHH", sport, dport, length, 0) + data
    csum = checksum(pseudo + seg) or 0xFFFF
    seg = seg[:6] + struct.pack("!H", csum) + seg[8:]
    return ipv4(src, dst, 17, seg)


def icmp_echo(src: str, dst: str, ident: int, seq: int, data: bytes) -> bytes:
    msg = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + data
    msg = msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:]
    return ipv4(src, dst, 1, msg)


def parse_ipv4(pkt: bytes) -> dict:
    ver_ihl, _, tot_len, _, _, ttl, proto, _, src, dst = struct.unpack(
        "!BBHHHBBH4s4s", pkt[:20])
    ihl = (ver_ihl & 0xF) * 4
    return {"version": ver_ihl >> 4, "tot_len": tot_len, "proto": proto,
            "src": socket.inet_ntoa(src), "dst": socket.inet_ntoa(dst),
            "header_ok": checksum(pkt[:ihl]) == 0, "payload": pkt[ihl:tot_len]}


def send_to_peer(n: int = 1, size: int = 32, port: int = 9) -> None:
    """Make the guest's stack transmit n UDP datagrams out of camex."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(n):
            s.sendto(bytes([i & 0xFF]) * size, (PEER, port))


def open_dev(nonblock: bool = False) -> int:
    """Open /dev/camex; if the link is up, wait until it is operationally up.

    Opening turns the carrier on, but the kernel attaches the interface's
    (no)queue discipline asynchronously (linkwatch); until it has, the stack
    discards what it sends to camex before the driver sees it.  Users see
    this as operstate UP, which is what a tunnel daemon waits for too.
    """
    fd = os.open(DEV, os.O_RDWR | (os.O_NONBLOCK if nonblock else 0))
    if link()["flags"] & 0x1:
        wait_for(lambda: link()["IFLA_OPERSTATE"] == "UP", what="operstate UP")
    return fd


def read_nonblock(fd: int, size: int = 65535) -> bytes | None:
    """One packet, or None if the queue is empty (EAGAIN)."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, size)
    except BlockingIOError:
        return None


def drain(fd: int) -> list[bytes]:
    pkts = []
    while (pkt := read_nonblock(fd)) is not None:
        pkts.append(pkt)
    return pkts


def oserror(fn, *args) -> int:
    """Run fn(*args); return the errno it failed with (0 if it did not)."""
    try:
        fn(*args)
    except OSError as exc:
        return exc.errno
    return 0


ERRNO = errno
