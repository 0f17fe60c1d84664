"""Contract tests of camex.ko, one per behaviour row of the driver's spec.

Run INSIDE a VM by lab/vm/guest.sh (as root, with camex.ko built for the
booted kernel in $CAMEX_KO); each test loads the module itself so that it
can choose module parameters and always starts from a fresh device.
"""

import ctypes
import errno
import mmap
import os
import select
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest

from vmlib import (DEV, IFNAME, LOCAL, PEER, carrier, drain, insmod,
                   link, loaded, module_loaded, open_dev, oserror, parse_ipv4,
                   read_nonblock, rmmod, send_to_peer, stats, udp, wait_for)

ARPHRD_NONE = 65534
IFF_UP, IFF_POINTOPOINT, IFF_NOARP = 0x1, 0x10, 0x80


# ---- load, device node, interface ------------------------------------------

def test_load_creates_root_only_device_node():
    with loaded(up=False):
        st = os.stat(DEV)
        assert stat.S_ISCHR(st.st_mode)
        assert os.major(st.st_rdev) == 10          # a misc device
        assert stat.S_IMODE(st.st_mode) == 0o600


def test_dev_mode_parameter_widens_the_node():
    with loaded(up=False, dev_mode="0666"):
        assert stat.S_IMODE(os.stat(DEV).st_mode) == 0o666


def test_invalid_parameters_refuse_to_load():
    for params in ({"queue_len": 0}, {"dev_mode": "01777"}):
        res = insmod(**params)
        assert res.returncode != 0, f"insmod {params} succeeded"
        assert not module_loaded()
        assert not os.path.exists(DEV)


def test_interface_is_bare_ipv4_point_to_point():
    with loaded(up=False):
        info = link()
        assert info["ifi_type"] == ARPHRD_NONE
        assert info["flags"] & IFF_POINTOPOINT and info["flags"] & IFF_NOARP
        assert info["IFLA_MTU"] == 1500
        assert info.get("IFLA_ADDRESS") in (None, "", "00:00:00:00:00:00")


def test_mtu_limits():
    with loaded(up=False):
        info = link()
        assert info["IFLA_MIN_MTU"] == 68
        assert info["IFLA_MAX_MTU"] == 65535
        for bad in (67, 65536):
            res = subprocess.run(["ip", "link", "set", IFNAME, "mtu", str(bad)],
                                 capture_output=True, text=True)
            assert res.returncode != 0, f"mtu {bad} accepted"
        subprocess.run(["ip", "link", "set", IFNAME, "mtu", "9000"], check=True)
        assert link()["IFLA_MTU"] == 9000


# ---- open / close -------------------------------------------------------------

def test_carrier_off_at_load_on_while_open_off_after_close():
    with loaded():
        assert carrier() == 0
        fd = open_dev()
        try:
            assert carrier() == 1
        finally:
            os.close(fd)
        assert carrier() == 0


def test_second_open_is_busy_until_the_first_closes():
    with loaded():
        fd = open_dev()
        try:
            assert oserror(os.open, DEV, os.O_RDWR) == errno.EBUSY
        finally:
            os.close(fd)
        fd = open_dev()          # the slot is free again
        os.close(fd)


def test_lseek_is_refused():
    with loaded():
        fd = open_dev()
        try:
            assert oserror(os.lseek, fd, 0, os.SEEK_SET) == errno.ESPIPE
        finally:
            os.close(fd)


# ---- read -----------------------------------------------------------------------

def test_read_returns_one_whole_ipv4_packet_per_call():
    with loaded():
        fd = open_dev()
        try:
            send_to_peer(n=2, size=100, port=4242)
            pkts = [wait_for(lambda: read_nonblock(fd), what="packet") for _ in range(2)]
            for i, pkt in enumerate(pkts):
                ip = parse_ipv4(pkt)
                assert ip["version"] == 4 and ip["header_ok"]
                assert len(pkt) == ip["tot_len"] == 20 + 8 + 100
                assert (ip["src"], ip["dst"], ip["proto"]) == (LOCAL, PEER, 17)
                assert ip["payload"][8:] == bytes([i]) * 100
            assert read_nonblock(fd) is None
        finally:
            os.close(fd)


def test_read_nonblocking_empty_gets_eagain():
    with loaded():
        fd = open_dev(nonblock=True)
        try:
            assert oserror(os.read, fd, 2000) == errno.EAGAIN
        finally:
            os.close(fd)


def test_read_blocks_until_a_packet_arrives():
    with loaded():
        fd = open_dev()
        got = []
        reader = threading.Thread(target=lambda: got.append(os.read(fd, 2000)))
        try:
            reader.start()
            time.sleep(0.5)
            assert reader.is_alive() and not got, "read did not block"
            send_to_peer(n=1, size=10)
            reader.join(10)
            assert not reader.is_alive()
            assert parse_ipv4(got[0])["dst"] == PEER
        finally:
            if reader.is_alive():
                send_to_peer(n=1)
                reader.join(5)
            os.close(fd)


class Interrupted(Exception):
    pass


def test_blocking_read_is_interrupted_by_a_signal():
    def on_alarm(signum, frame):
        raise Interrupted()

    with loaded():
        fd = open_dev()
        old = signal.signal(signal.SIGALRM, on_alarm)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.5)
            start = time.monotonic()
            with pytest.raises(Interrupted):
                os.read(fd, 2000)
            assert time.monotonic() - start >= 0.4
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
            os.close(fd)


def test_read_buffer_too_small_gets_emsgsize_and_drops_the_packet():
    with loaded():
        fd = open_dev()
        try:
            before = stats()["tx_dropped"]
            send_to_peer(n=1, size=100)
            wait_for(lambda: select.select([fd], [], [], 0)[0], what="POLLIN")
            assert oserror(os.read, fd, 50) == errno.EMSGSIZE
            assert read_nonblock(fd) is None, "packet was not dropped"
            assert stats()["tx_dropped"] == before + 1
        finally:
            os.close(fd)


# ---- write ----------------------------------------------------------------------

def test_write_injects_the_packet_into_the_stack():
    with loaded():
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind((LOCAL, 5555))
        rx.settimeout(5)
        fd = open_dev()
        try:
            before = stats()
            pkt = udp(PEER, LOCAL, 6666, 5555, b"hello camex")
            assert os.write(fd, pkt) == len(pkt)
            data, addr = rx.recvfrom(100)
            assert data == b"hello camex" and addr == (PEER, 6666)
            after = stats()
            assert after["rx_packets"] == before["rx_packets"] + 1
            assert after["rx_bytes"] == before["rx_bytes"] + len(pkt)
        finally:
            os.close(fd)
            rx.close()


def test_write_rejects_bad_sizes_and_non_ipv4_with_einval():
    with loaded():
        fd = open_dev()
        try:
            good = udp(PEER, LOCAL, 1, 9, b"x" * 100)
            before = stats()
            assert oserror(os.write, fd, b"") == errno.EINVAL
            assert oserror(os.write, fd, good[:19]) == errno.EINVAL
            assert oserror(os.write, fd, b"\x45" + b"\0" * 65535) == errno.EINVAL
            assert oserror(os.write, fd, b"\x60" + good[1:]) == errno.EINVAL  # IPv6
            assert oserror(os.write, fd, b"\x05" + good[1:]) == errno.EINVAL
            after = stats()
            assert after["rx_packets"] == before["rx_packets"]
            assert after["rx_dropped"] == before["rx_dropped"]
            assert os.write(fd, good[:20]) == 20     # 20 bytes is the minimum
        finally:
            os.close(fd)


def _write_at_page_end(fd: int, first: int, count: int) -> int:
    """write(fd) of `count` bytes whose first byte is the last byte of a
    mapped page followed by an unmapped one; return the errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                          ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    page = mmap.PAGESIZE
    base = libc.mmap(None, 2 * page, mmap.PROT_READ | mmap.PROT_WRITE,
                     mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    assert base not in (None, ctypes.c_void_p(-1).value)
    try:
        assert libc.munmap(base + page, page) == 0
        ctypes.memset(base + page - 1, first, 1)
        ret = libc.write(fd, base + page - 1, count)
        return 0 if ret >= 0 else ctypes.get_errno()
    finally:
        libc.munmap(base, page)


def test_write_checks_the_first_byte_before_copying_the_packet():
    # Only the first byte is readable: a version check that happens before
    # the copy answers EINVAL, the copy itself would fault (EFAULT).
    with loaded():
        fd = open_dev()
        try:
            assert _write_at_page_end(fd, 0x60, 100) == errno.EINVAL
            assert _write_at_page_end(fd, 0x45, 100) == errno.EFAULT
            libc = ctypes.CDLL(None, use_errno=True)
            libc.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
            assert libc.write(fd, 8, 100) == -1 and ctypes.get_errno() == errno.EFAULT
            assert libc.write(fd, 8, 10) == -1 and ctypes.get_errno() == errno.EINVAL
        finally:
            os.close(fd)


def test_write_while_link_down_gets_eio():
    with loaded(up=False):
        fd = open_dev()
        try:
            pkt = udp(PEER, LOCAL, 1, 9, b"x")
            assert oserror(os.write, fd, pkt) == errno.EIO
        finally:
            os.close(fd)


# ---- poll / select / epoll -----------------------------------------------------

def test_poll_select_epoll_report_pollin_only_when_queued_and_pollout_always():
    with loaded():
        fd = open_dev()
        ep = select.epoll()
        try:
            ep.register(fd, select.EPOLLIN | select.EPOLLOUT)
            p = select.poll()
            p.register(fd, select.POLLIN | select.POLLOUT)
            assert p.poll(0) == [(fd, select.POLLOUT | select.POLLWRNORM)] or \
                p.poll(0) == [(fd, select.POLLOUT)]
            assert select.select([fd], [fd], [], 0)[:2] == ([], [fd])
            assert ep.poll(0) == [(fd, select.EPOLLOUT)]

            # A blocked poll wakes up when the stack transmits.
            waiter = []
            t = threading.Thread(target=lambda: waiter.append(
                select.select([fd], [], [], 10)[0]))
            t.start()
            time.sleep(0.3)
            send_to_peer(n=1)
            t.join(12)
            assert waiter == [[fd]]

            (events,) = [ev for f, ev in p.poll(0) if f == fd]
            assert events & select.POLLIN and events & select.POLLOUT
            assert select.select([fd], [fd], [], 0)[:2] == ([fd], [fd])
            assert ep.poll(0) == [(fd, select.EPOLLIN | select.EPOLLOUT)]

            drain(fd)
            assert select.select([fd], [], [], 0)[0] == []
        finally:
            ep.close()
            os.close(fd)


# ---- close ----------------------------------------------------------------------

def test_close_flushes_the_queue_and_frees_the_slot():
    with loaded():
        fd = open_dev()
        before = stats()["tx_dropped"]
        send_to_peer(n=3)
        wait_for(lambda: select.select([fd], [], [], 0)[0], what="queued packets")
        os.close(fd)
        assert carrier() == 0
        assert stats()["tx_dropped"] == before + 3
        fd = open_dev(nonblock=True)       # slot free, queue empty
        try:
            assert read_nonblock(fd) is None
        finally:
            os.close(fd)


# ---- transmit queue ------------------------------------------------------------

def test_transmit_queue_holds_64_by_default_and_counts_drops():
    with loaded():
        fd = open_dev()
        try:
            before = stats()
            send_to_peer(n=100)
            pkts = drain(fd)
            assert len(pkts) == 64
            after = stats()
            assert after["tx_dropped"] - before["tx_dropped"] == 36
            assert after["tx_packets"] - before["tx_packets"] == 64
        finally:
            os.close(fd)


def test_queue_len_parameter_changes_the_limit():
    with loaded(queue_len=5):
        fd = open_dev()
        try:
            send_to_peer(n=12)
            assert len(drain(fd)) == 5
        finally:
            os.close(fd)


def test_stats_are_visible_in_ip_s_link():
    with loaded():
        fd = open_dev()
        try:
            send_to_peer(n=3, size=50)
            assert len(drain(fd)) == 3
            os.write(fd, udp(PEER, LOCAL, 1, 9, b"y" * 10))
        finally:
            os.close(fd)
        out = subprocess.run(["ip", "-s", "link", "show", IFNAME],
                             capture_output=True, text=True, check=True).stdout
        lines = out.splitlines()
        rx = lines[lines.index(next(l for l in lines if "RX:" in l)) + 1].split()
        tx = lines[lines.index(next(l for l in lines if "TX:" in l)) + 1].split()
        assert (int(rx[0]), int(rx[1])) == (20 + 8 + 10, 1)
        assert (int(tx[0]), int(tx[1])) == (3 * (20 + 8 + 50), 3)


# ---- unload ----------------------------------------------------------------------

def test_rmmod_is_refused_while_the_device_is_open():
    with loaded():
        fd = open_dev()
        try:
            res = rmmod()
            assert res.returncode != 0
            assert "in use" in res.stderr
            assert module_loaded() and os.path.exists(DEV)
        finally:
            os.close(fd)
        assert rmmod().returncode == 0
        assert not os.path.exists(DEV)
        assert not os.path.exists(f"/sys/class/net/{IFNAME}")


def test_unload_while_the_stack_is_transmitting():
    # Traffic keeps hitting the xmit path while the reader goes away and the
    # module is removed: nothing may touch freed state (dmesg is checked
    # at the end of the run).
    with loaded():
        stop = threading.Event()

        def blast():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            while not stop.is_set():
                try:
                    s.sendto(b"z" * 200, (PEER, 9))
                except OSError:
                    time.sleep(0.001)   # no route once the interface is gone
            s.close()

        t = threading.Thread(target=blast)
        t.start()
        try:
            fd = open_dev()
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                drain(fd)
            os.close(fd)
            assert rmmod().returncode == 0
            assert not module_loaded()
        finally:
            stop.set()
            t.join(5)
