"""In memory: a v2 server core taking one DATA datagram at a time from N
clients in turn, and what the sessions' AEAD objects cost in memory.

    python -m bench.fleet_v2_micro [--clients 10,1000] [--rounds 3]
        [--versus-lru 512] [--grouped] [--tree DIR]
    python -m bench.fleet_v2_micro --opens [--clients 10,1000]
    python -m bench.fleet_v2_micro --objects 2000

N V2ClientCores (auto, the global passphrase) complete their handshakes
with one V2ServerCore (local delivery) in memory; then, each round, the
clients seal 20,000 1,180-byte inner IPv4 packets to the server's address,
one DATA datagram each, round robin (the camera fleet of bench/fleet.py
without sockets), and the server core takes them one by one through its
flat receive path. Printed per round: the server's CPU per datagram (of
the thread), and the AEAD objects its cache built during the round where
the cache counts them. The clients share the process's cache with the
server (a client's send key is the server's recv key, equal bytes), so a
cache that keeps every sender's object hits from the first round on.

`--versus-lru 512` measures each round twice, in alternating order: with
the tree's cache and with a least-recently-used cache of that many objects
(what camex had before, `LruAeads` here) in its place, so both see the
same load of the machine's other tenants; printed with the median and the
least of each. `--tree DIR` imports camex from another checkout (git
archive COMMIT camex | tar -x -C DIR).

`--grouped`: each client's datagrams of a round one after the other
instead of in turn (the same work with the per-client state warm in the
CPU's caches). `--opens`: only the AEAD opens of such a round, over N
objects in turn. `--objects N`: the resident memory of N ChaCha20Poly1305
objects and of N AESGCM objects, each set in a fresh interpreter of its
own, from VmRSS before and after building them (the cipher contexts live
in OpenSSL's and Rust's heap, which tracemalloc does not see).
docs/FASTPATH.md, section 7, quotes them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from cryptography.exceptions import InvalidTag

PASSPHRASE = b"bench-fleet-v2-passphrase"
DATAGRAMS = 20000


class LruAeads:
    """The count-bounded cache the v2 sessions had before (for
    --versus-lru): `size` objects, least recently used out first."""

    def __init__(self, size: int):
        from collections import OrderedDict
        from camex.v2.session import aead_for
        self.size, self.aead_for, self.built = size, aead_for, 0
        self._objs: OrderedDict = OrderedDict()

    def get(self, key: bytes):
        objs = self._objs
        aead = objs.get(key)
        if aead is None:
            aead = objs[key] = self.aead_for(key)
            self.built += 1
            if len(objs) > self.size:
                objs.popitem(last=False)
        else:
            objs.move_to_end(key)
        return aead


def use_cache(cache) -> None:
    """Every path that borrows AEAD objects borrows them from `cache`."""
    from camex.v2 import lone, session
    session.AEADS = cache
    if hasattr(lone, "AEADS"):
        lone.AEADS = cache


def world(n: int):
    """A server core and n established client cores, with their addresses."""
    from camex.daemon.config import parse_config
    from camex.testing.memlab import det_rng, handshake
    from camex.v2.core import V2ClientCore, V2ServerCore

    conf = "[defaults]\ngateway_ip = 10.0.0.1\n" + "".join(
        f"[client cam{i}]\nlocal_cidr = 10.0.{(i + 2) // 250}.{(i + 2) % 250 + 1}/16\n"
        for i in range(n))
    srv = V2ServerCore(global_passphrase=PASSPHRASE, config=parse_config(conf),
                       local_delivery=True, rng=det_rng(b"srv"))
    clients = []
    now = 100.0
    for i in range(n):
        cli = V2ClientCore(auto=True, passphrase=PASSPHRASE, client_id=f"cam{i}",
                           rng=det_rng(b"cli%d" % i))
        addr = ("192.0.2.1", 4000 + i)
        if not handshake(srv, cli, addr, now, rounds=6):
            raise RuntimeError(f"client {i} did not complete its handshake")
        cli.to_tun.clear()
        srv.to_tun.clear()
        clients.append((cli, addr))
        now += 0.05
    return srv, clients, now + 1.0


def one_round(srv, clients, now: float, grouped: bool = False) -> tuple:
    """(us of server CPU per datagram, objects built) for one round; the
    clients in turn, or (`grouped`) each client's datagrams together."""
    from camex.testing.memlab import ipv4
    from camex.v2 import session

    items = []
    per = max(1, DATAGRAMS // len(clients))
    turns = [(cli, addr) for _ in range(per) for cli, addr in clients] if not grouped \
        else [(cli, addr) for cli, addr in clients for _ in range(per)]
    for cli, addr in turns:
        cli.tun_packet(ipv4(str(cli.config.address.ip), "10.0.0.1", b"u" * 1180), now)
        items.append((cli.to_net.pop(), addr))
    built0 = getattr(session.AEADS, "built", None)
    received = srv.datagram_received
    t0 = time.thread_time()
    for d, a in items:
        received(d, a, now)
    dt = (time.thread_time() - t0) / len(items)
    delivered = len(srv.to_tun)
    srv.to_tun.clear()
    if delivered != len(items):
        raise RuntimeError(f"{delivered} of {len(items)} datagrams delivered")
    built = None if built0 is None else session.AEADS.built - built0
    return dt * 1e6, built


def vm_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def objects(n: int, cipher: str | None) -> None:
    """VmRSS per object of n objects of one cipher, each used once to seal
    and once to open (as a session's are); without `cipher`, each cipher
    in a process of its own (memory freed by one would be reused by the
    other)."""
    if cipher is None:
        for c in CIPHERS:
            subprocess.run([sys.executable, "-m", "bench.fleet_v2_micro", "--objects", str(n),
                            "--cipher", c], check=True)
        return
    cls = CIPHERS[cipher]()
    nonce = bytes(12)
    sealed = cls(os.urandom(32)).encrypt(nonce, b"x" * 100, b"")

    def used(key: bytes):
        obj = cls(key)
        obj.encrypt(nonce, b"x" * 100, b"")
        try:
            obj.decrypt(nonce, sealed, b"")
        except InvalidTag:    # another key's ciphertext: the open fails, as a forged one would
            pass
        return obj

    warm = [used(os.urandom(32)) for _ in range(50)]   # the first ones' one-off set-up
    del warm
    keys = [os.urandom(32) for _ in range(n)]
    before = vm_rss_kib()
    kept = [used(k) for k in keys]
    after = vm_rss_kib()
    print(f"{n} {cipher} objects: VmRSS +{after - before} KiB, "
          f"{(after - before) * 1024 / len(kept):.0f} bytes each")


def opens(clients) -> None:
    """CPU per ChaCha20-Poly1305 open of a 1,200-byte datagram, 20,000
    opens over N objects in turn: do the cipher contexts of many senders
    cost more than those of a few (the CPU's caches)?"""
    cls = _chacha()
    nonce, head = bytes(12), b"h" * 16
    for n in clients:
        objs = [cls(os.urandom(32)) for _ in range(n)]
        items = [(o, o.encrypt(nonce, b"u" * 1182, head))
                 for _ in range(max(1, DATAGRAMS // n)) for o in objs]
        t0 = time.thread_time()
        for o, sealed in items:
            o.decrypt(nonce, sealed, head)
        dt = (time.thread_time() - t0) / len(items)
        print(f"N={n:5d} {dt * 1e6:5.2f} us per open, objects in turn")


def _chacha():
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    return ChaCha20Poly1305


def _aes():
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    return AESGCM


CIPHERS = {"chacha20-poly1305": _chacha, "aes-256-gcm": _aes}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fleet_v2_micro",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="10,1000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tree", help="import camex from this directory instead")
    ap.add_argument("--versus-lru", type=int, metavar="SIZE",
                    help="each round also with a least-recently-used cache of SIZE objects")
    ap.add_argument("--objects", type=int, help="measure the memory of this many AEAD objects")
    ap.add_argument("--cipher", choices=sorted(CIPHERS), help="--objects: this cipher only")
    ap.add_argument("--grouped", action="store_true",
                    help="each client's datagrams of a round together, not in turn")
    ap.add_argument("--opens", action="store_true",
                    help="only the AEAD opens, over N objects in turn")
    args = ap.parse_args(argv)
    if args.objects:
        objects(args.objects, args.cipher)
        return 0
    if args.opens:
        opens([int(x) for x in args.clients.split(",")])
        return 0
    if args.tree:
        sys.path.insert(0, args.tree)
    from camex.v2 import session
    print(f"camex from {os.path.dirname(os.path.dirname(session.__file__))}")
    own = session.AEADS
    caches = [("tree's cache", own)]
    for n in (int(x) for x in args.clients.split(",")):
        if args.versus_lru:
            caches = [("tree's cache", own), (f"LRU of {args.versus_lru}", LruAeads(args.versus_lru))]
        srv, clients, now = world(n)
        got: dict = {name: [] for name, _ in caches}
        for r in range(args.rounds):
            for name, cache in (caches if r % 2 == 0 else caches[::-1]):
                use_cache(cache)
                us, built = one_round(srv, clients, now, args.grouped)
                got[name].append(us)
                print(f"N={n:5d} round {r + 1}, {name}: {us:5.2f} us/datagram"
                      + ("" if built is None else f", {built} AEAD objects built"))
        use_cache(own)
        for name, v in got.items():
            v.sort()
            print(f"N={n:5d} {name}: median {v[len(v) // 2]:5.2f}, least {v[0]:5.2f} us/datagram")
    print(f"load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
