"""In process, what a relayed fleet datagram costs at each layer.

    python -m bench.mmsg_micro [--rounds 200] [--backend cffi|ctypes]

- receive: 64 datagrams of 1,243 bytes from 64 loopback senders, read by
  recvfrom, recvmsg with ancillary space (the daemon's one-read path),
  recvfrom_into plus a copy, and camex.io.mmsg's recvmmsg (and its syscall
  alone);
- send: 64 datagrams to 64 destinations by sendto and by sendmmsg, and to
  one destination by the daemon's GSO sender and by sendmmsg;
- call: one Batch call carrying little (recv() of an empty socket, send()
  of one 64-byte datagram): what the binding costs per call;
- core: the legacy server core relaying 1,200-byte DATA between 100
  registered senders, one datagram at a time (datagram_received) and in
  batches of 64 (datagrams_received), with the AEAD's own cost beside.

`--backend` picks camex.io.libc's backend for the batches (by default
what the process has loaded: ctypes for receive and send, cffi's for
wakeup, after the core part loaded cryptography).

CPU nanoseconds per datagram (per call for `call`) of this thread, the
best round (the least disturbed by other tenants). docs/FASTPATH.md, section 7, quotes it.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

from camex.io import gso, mmsg
from camex.legacy import codec

N = 64
SIZE = 1243   # a 1,200-byte inner packet, sealed


BACKEND = None


def _batch(sock: socket.socket, n: int):
    if BACKEND is None:
        return mmsg.Batch(sock, n)
    return mmsg.Batch(sock, n, backend=BACKEND)


def _udp(rcvbuf: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    return s


def _best(rounds: int, prepare, fn, after=None) -> float:
    best = float("inf")
    for _ in range(rounds):
        if prepare is not None:
            prepare()
        t0 = time.thread_time_ns()
        fn()
        best = min(best, (time.thread_time_ns() - t0) / N)
        if after is not None:
            after()
    return best


def receive(rounds: int) -> dict:
    rx = _udp(8 << 20)
    txs = [_udp() for _ in range(N)]
    d, dst = bytes(SIZE), rx.getsockname()
    batch = _batch(rx, N)

    def fill():
        for t in txs:
            t.sendto(d, dst)

    def loop(call):
        def run():
            while True:
                try:
                    call()
                except BlockingIOError:
                    return
        return run

    out = {
        "recvfrom": _best(rounds, fill, loop(lambda: rx.recvfrom(65535))),
        "recvmsg + ancillary": _best(rounds, fill, loop(lambda: rx.recvmsg(65535, 64))),
    }
    buf = bytearray(65535)
    mv = memoryview(buf)

    def into():
        n, _a = rx.recvfrom_into(buf)
        bytes(mv[:n])
    out["recvfrom_into + copy"] = _best(rounds, fill, loop(into))
    out["recvmmsg"] = _best(rounds, fill, batch.recv, lambda: batch.recv())
    null = getattr(batch, "_null", None)   # (a NULL its backend takes)
    out["recvmmsg syscall alone"] = _best(
        rounds, fill, lambda: batch._recvmmsg(batch.fd, batch._rptr, N, mmsg.MSG_DONTWAIT, null))
    return out


def send(rounds: int) -> dict:
    tx = _udp()
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    rxs = [_udp(1 << 20) for _ in range(N)]
    d = bytes(SIZE)
    many = [(d, r.getsockname()) for r in rxs]
    one = [(d, rxs[0].getsockname())] * N
    batch = _batch(tx, N)
    sender = gso.Sender(tx, gso.probe().udp_gso)

    def drain():
        for r in rxs:
            try:
                while True:
                    r.recv(65535)
            except BlockingIOError:
                pass

    def sendto():
        for x, a in many:
            tx.sendto(x, a)
    return {
        "sendto, 64 destinations": _best(rounds, None, sendto, drain),
        "sendmmsg, 64 destinations": _best(rounds, None, lambda: batch.send(many), drain),
        "GSO sender, one destination": _best(rounds, None, lambda: sender.send_grouped(one),
                                             drain),
        "sendmmsg, one destination": _best(rounds, None, lambda: batch.send(one), drain),
    }


def call(rounds: int) -> dict:
    """One Batch call, what the binding adds to the kernel's work: recv()
    of an empty socket (the syscall, its EAGAIN, errno) and send() of one
    small datagram (one sendmmsg); nanoseconds per call."""
    rx, tx = _udp(1 << 20), _udp()
    rb, tb = _batch(rx, 16), _batch(tx, 16)
    one = [(bytes(64), rx.getsockname())]

    def empty():
        for _ in range(N):
            rb.recv()

    def send():
        for _ in range(N):
            tb.send(one)
    out = {"call: recv() of an empty socket": _best(rounds, None, empty),
           "call: send() of one datagram": _best(rounds, None, send, lambda: _drain(rx))}
    for s in (rx, tx):
        s.close()
    return out


def core(rounds: int) -> dict:
    from camex.base.aead import ChaCha20Poly1305
    from camex.tunnel.server import ServerMux

    from .relay_micro import PSK, inner, tunnel_ip

    mux = ServerMux(passphrase=PSK, encrypt=True)
    aead = ChaCha20Poly1305(codec.derive_key(PSK))
    senders = 100
    prefixes = [os.urandom(4) for _ in range(senders + 1)]
    seqs = [0] * (senders + 1)
    addrs = [("192.0.2.1", 20000 + i) for i in range(senders + 1)]

    def seal(i, ptype, payload):
        seqs[i] += 1
        return codec.seal(aead, ptype, prefixes[i], seqs[i], payload)
    for i in range(senders + 1):
        mux.datagram_received(seal(i, codec.T_REGISTER, codec.register_manual(tunnel_ip(i))),
                              addrs[i], 1.0)
    mux.outbox.clear()
    packets = [inner(tunnel_ip(i), tunnel_ip(0)) for i in range(senders + 1)]
    count = 64 * 50
    out: dict = {}

    def work():
        return [(seal(1 + k % senders, codec.T_DATA, packets[1 + k % senders]),
                 addrs[1 + k % senders]) for k in range(count)]

    def other(d, a, size, now):
        raise AssertionError("every datagram takes the batch path")

    for name in ("one by one", "batches of 64"):
        best = float("inf")
        for _ in range(max(3, rounds // 40)):
            items = work()
            if name == "batches of 64":
                views = [(memoryview(d), a, 0) for d, a in items]
                t0 = time.thread_time_ns()
                for i in range(0, count, 64):
                    mux.datagrams_received(views[i:i + 64], 2.0, other)
            else:
                one = mux.datagram_received
                t0 = time.thread_time_ns()
                for d, a in items:
                    one(d, a, 2.0)
            best = min(best, (time.thread_time_ns() - t0) / count)
            assert len(mux.outbox) == count, mux.drops()
            mux.outbox.clear()
        out[f"legacy core, {name}"] = best
    d, p = seal(1, codec.T_DATA, packets[1]), packets[1]
    for name, fn in (("AEAD open", lambda: aead.decrypt(d[5:17], d[27:], d[:27])),
                     ("AEAD seal", lambda: aead.encrypt(d[5:17], p, d[:27]))):
        best = float("inf")
        for _ in range(5):
            t0 = time.thread_time_ns()
            for _ in range(2000):
                fn()
            best = min(best, (time.thread_time_ns() - t0) / 2000)
        out[name] = best
    return out


def wakeup(rounds: int) -> dict:
    """One readiness event of the server's socket holding `k` datagrams (1
    or 2: a fleet at 8,000-45,000/s), as the daemon handles it: epoll,
    the clock, the receive, the legacy core, the send (to a real socket).
    The daemon's lone-datagram path (recvmsg, datagram_received, sendto)
    against its burst path (recvmmsg, datagrams_received, one flush). The
    sender's sendto is outside the timed part; the sleep and the scheduler's
    wake-up are not in it either (no thread waits)."""
    import select

    from camex.base.aead import ChaCha20Poly1305
    from camex.io import udp
    from camex.tunnel.server import ServerMux

    from .relay_micro import PSK, inner, tunnel_ip

    srv, rx = _udp(4 << 20), _udp(4 << 20)
    senders = [_udp() for _ in range(100)]
    mux = ServerMux(passphrase=PSK, encrypt=True)
    aead = ChaCha20Poly1305(codec.derive_key(PSK))
    prefixes = [os.urandom(4) for _ in range(101)]
    seqs = [0] * 101
    addrs = [rx.getsockname()] + [s.getsockname() for s in senders]

    def seal(i, ptype, payload):
        seqs[i] += 1
        return codec.seal(aead, ptype, prefixes[i], seqs[i], payload)
    for i in range(101):
        mux.datagram_received(seal(i, codec.T_REGISTER, codec.register_manual(tunnel_ip(i))),
                              addrs[i], 1.0)
    mux.outbox.clear()
    packets = [inner(tunnel_ip(i), tunnel_ip(0)) for i in range(101)]
    to = srv.getsockname()
    ep = select.epoll()
    ep.register(srv.fileno(), select.EPOLLIN)
    recv = gso.gro_receiver(srv)
    batch = _batch(srv, 16)
    sender = gso.Sender(srv, False, lambda e, a: None)
    one_read = udp.one_read(mux.datagram_received)
    out = mux.outbox
    clock = time.monotonic

    def flush():
        if len(out) == 1:
            d, a = out[0]
            srv.sendto(d, a)
        elif out:
            sender.send_grouped(out)
        out.clear()

    def lone():
        ep.poll(0)
        udp.receive(recv, mux.datagram_received, True, clock(), False, lambda: len(out),
                    16, flush, lambda e: True)
        clock()

    def burst():
        ep.poll(0)
        udp.receive_batch(batch.recv, mux.datagrams_received, one_read, clock(), 4, 16,
                          flush, lambda e: True)
        clock()

    res = {}
    for k in (1, 2):
        for name, fn in (("recvmsg path (lone)", lone), ("recvmmsg path (burst)", burst)):
            best = float("inf")
            for _ in range(max(3, rounds // 20)):
                spent, j = 0, 0
                for it in range(200):
                    for _ in range(k):
                        j = j % 100 + 1
                        senders[j - 1].sendto(seal(j, codec.T_DATA, packets[j]), to)
                    t0 = time.thread_time_ns()
                    # (epoll is level-triggered: the lone path is called
                    # again while datagrams remain)
                    for _ in range(k if fn is lone else 1):
                        fn()
                    spent += time.thread_time_ns() - t0
                    if it % 32 == 31:
                        _drain(rx)
                _drain(rx)
                best = min(best, spent / (200 * k))
            res[f"wake-up with {k}: {name}"] = best
    for s in [srv, rx, *senders]:
        s.close()
    ep.close()
    return res


def _drain(s) -> None:
    try:
        while True:
            s.recv(65536)
    except BlockingIOError:
        pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.mmsg_micro",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--parts", default="receive,send,core,wakeup",
                    help="comma-separated: receive, send, core, wakeup, call")
    ap.add_argument("--backend", choices=("cffi", "ctypes"),
                    help="camex.io.libc's backend for the batches")
    args = ap.parse_args(argv)
    global BACKEND
    BACKEND = args.backend
    if not mmsg.available():
        print("libc has no recvmmsg/sendmmsg", file=sys.stderr)
        return 1
    parts = {"receive": receive, "send": send, "core": core, "wakeup": wakeup, "call": call}
    for part in (parts[p] for p in args.parts.split(",")):
        for k, v in part(args.rounds).items():
            per = "call" if k.startswith("call:") else "datagram"
            print(f"{k:42} {v:8.0f} ns per {per}")
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
