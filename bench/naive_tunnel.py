"""The plain Python tunnels camex is measured against: one packet per system call.

Point-to-point UDP/TUN loops with none of camex's offloads: read one
packet from the TUN, send it as one datagram; receive one datagram, write
it to the TUN. No framing, no replay window, no handshake. The bench runs
them as baselines, to show what the data path work buys over the obvious
program and what Python itself costs on this machine:

- default: one thread, a select loop over both descriptors
  ("naive-python", the first baseline measured);
- --threads: one thread per direction, each blocked in its own read, so
  a packet wakes the reader directly (no select call, no dispatch): the
  shortest path from a packet to Python code and back to the kernel;
- --aead (implies --threads): as --threads, and every packet sealed with
  ChaCha20-Poly1305 from `cryptography` under a key from one X25519
  exchange at start: the least an encrypted Python tunnel must do.
  Its resident memory and idle round trip are the floor under any
  encrypted Python daemon built on the same libraries.
- --bulk (implies --threads): the least an encrypted Python tunnel with
  offloads must do. The TUN hands over TCP super-packets of up to 64 KiB
  (IFF_VNET_HDR, TUNSETOFFLOAD), each is sealed once with AES-256-GCM and
  sent as one UDP GSO train (UDP_SEGMENT on the socket); the receiver
  reads the train whole (UDP_GRO: over veth one GSO send arrives as one
  read), opens it and writes it to its TUN with the sender's
  virtio_net_hdr. No per-datagram header, no reassembly, no replay
  window: a train that does not arrive whole fails its tag and is
  dropped, and TCP sends it again. What camex's BULK path does per 64 KiB
  frame beyond this is its protocol's cost; this tunnel's CPU per GB is
  the floor under any Python tunnel on these libraries and system calls.
- --framed (implies --bulk): as --bulk, with a 20-byte header on every
  datagram of a train (counter, index, count), glued in on the way out
  and gathered out on the way in, and trains of at most 64,467-byte
  super-packets (the bench sets the TUN's gso_max_size as camex does):
  the floor of a framing that, like camex's BULK, lets a receiver tell
  the pieces of a train apart after loss or reordering.
- --relay: no TUN; the floor under camex's v2 relay of a TCP stream. One
  socket and one thread between two --framed tunnels (each SIDE is the
  relay's address towards a tunnel and that tunnel's address): every
  train from one side is received whole (UDP GRO), checked and gathered
  as --framed does, opened, sealed again under the other side's key,
  glued and sent as one GSO train. Nothing else: no routing table, no
  replay window.
- --relay --forward: as --relay without opening anything: each train goes
  out to the other side as it came in. The two tunnels then seal end to
  end: each is started with --end and the other tunnel's address, and
  derives its keys for that pair instead of for itself and the relay.
  What a relay would save if the server never held the clients' keys.

    python -m bench.naive_tunnel [--threads] [--aead] [--bulk] [--framed] [--end IP:PORT] IFNAME LOCAL_IP:PORT PEER_IP:PORT
    python -m bench.naive_tunnel --relay [--forward] LOCAL_IP:PORT,PEER_IP:PORT LOCAL_IP:PORT,PEER_IP:PORT

The bench configures the TUN's address and MTU itself (pyroute2).
"""

from __future__ import annotations

import fcntl
import os
import selectors
import signal
import socket
import struct
import sys
import textwrap
import threading

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04
UDP_SEGMENT, UDP_GRO = 103, 104
# One UDP datagram of the train: the underlay's 1500-byte MTU less the
# IPv4 and UDP headers.
BULK_SEGMENT = 1472
# The largest TUN read a train can carry: one GSO send is at most 65,507
# bytes, less the 8-byte counter and the 16-byte tag; the bench caps the
# TUN's gso_max_size at that less the 10-byte virtio_net_hdr.
BULK_MAX_READ = 65507 - 8 - 16
BULK_GSO_MAX = BULK_MAX_READ - 10

# The --aead key is the same at both ends without any exchange on the
# wire: each end computes X25519 of the same two fixed bench keys. This is
# a baseline's key, not a secret. Each pair of endpoints has its own keys
# (HKDF over the two addresses: the relay's two sides never share one) and
# each direction its own (the end with the lower address sends with the
# first), so no two counters meet under one key.
_BENCH_PRIVATE = (b"\x01" * 32, b"\x02" * 32)


def open_tun(name: str, blocking: bool, offload: bool = False) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | (0 if blocking else os.O_NONBLOCK))
    flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
    if offload:
        fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
    return fd


def _addr(text: str):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def select_loop(tun: int, sock: socket.socket) -> None:
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(tun, selectors.EVENT_READ, "tun")
    sel.register(sock, selectors.EVENT_READ, "udp")
    while True:
        for key, _ in sel.select():
            try:
                if key.data == "tun":
                    sock.send(os.read(tun, 65535))
                else:
                    os.write(tun, sock.recv(65535))
            except OSError:
                # Lost, as a tunnel may: nothing queued, the peer's port not
                # open yet, or the TUN not up yet (EIO).
                pass


def plain_pipes(tun: int, sock: socket.socket):
    """(TUN -> UDP, UDP -> TUN) loops for --threads."""

    def up():
        read, send = os.read, sock.send
        while True:
            try:
                send(read(tun, 65535))
            except OSError:
                pass

    def down():
        recv, write = sock.recv, os.write
        while True:
            try:
                write(tun, recv(65535))
            except OSError:
                pass

    return up, down


def _endpoint(addr) -> bytes:
    return socket.inet_aton(addr[0]) + struct.pack(">H", addr[1])


def _bench_keys(local, peer, cls):
    """(send, receive) AEAD objects of --aead, --bulk and --relay between
    the endpoints ``local`` and ``peer`` ((host, port) each)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    a, b = (X25519PrivateKey.from_private_bytes(k) for k in _BENCH_PRIVATE)
    me, other = _endpoint(local), _endpoint(peer)
    lo, hi = sorted((me, other))
    okm = HKDF(hashes.SHA256(), 64, None, b"camex bench " + lo + hi).derive(
        a.exchange(b.public_key()))
    k1, k2 = cls(okm[:32]), cls(okm[32:])
    return (k1, k2) if me == lo else (k2, k1)


def aead_pipes(tun: int, sock: socket.socket, keys):
    """(TUN -> UDP, UDP -> TUN) loops for --aead: a datagram is an 8-byte
    counter, then the sealed packet; the counter is the nonce."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    tx, rx = keys(ChaCha20Poly1305)
    counter = struct.Struct("<Q")

    def up():
        read, send, seal, pack = os.read, sock.send, tx.encrypt, counter.pack
        n = 0
        while True:
            try:
                p = read(tun, 65535)
                n += 1
                c = pack(n)
                send(c + seal(b"\0\0\0\0" + c, p, None))
            except OSError:
                pass

    def down():
        recv, write, open_ = sock.recv, os.write, rx.decrypt
        while True:
            try:
                d = recv(65535)
                write(tun, open_(b"\0\0\0\0" + d[:8], d[8:], None))
            except (OSError, InvalidTag, ValueError):
                pass

    return up, down


def _bulk_socket(sock: socket.socket) -> None:
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)  # as camex asks (io/udp.py)
    sock.setsockopt(socket.SOL_UDP, UDP_SEGMENT, BULK_SEGMENT)
    sock.setsockopt(socket.SOL_UDP, UDP_GRO, 1)


def bulk_pipes(tun: int, sock: socket.socket, keys, framed: bool = False):
    """(TUN -> UDP, UDP -> TUN) loops for --bulk: a train is an 8-byte
    counter, then the sealed TUN read (virtio_net_hdr and packet); the
    counter is the nonce."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    tx, rx = keys(AESGCM)
    counter = struct.Struct("<Q")
    _bulk_socket(sock)

    if framed:
        return _framed_pipes(tun, sock, tx, rx, InvalidTag)

    def up():
        read, send, seal, pack = os.read, sock.sendmsg, tx.encrypt, counter.pack
        n = 0
        while True:
            try:
                p = read(tun, BULK_MAX_READ)
                n += 1
                c = pack(n)
                send((c, seal(b"\0\0\0\0" + c, p, None)))
            except OSError:
                pass

    def down():
        recv, write, open_ = sock.recv, os.write, rx.decrypt
        while True:
            try:
                d = recv(65536)
                write(tun, open_(b"\0\0\0\0" + d[:8], memoryview(d)[8:], None))
            except (OSError, InvalidTag, ValueError):
                pass

    return up, down


# --framed: every datagram of a train starts with a header of camex's BULK
# size (20 bytes): the counter, the datagram's index and the train's
# count, so that a receiver could tell the pieces of a train apart after
# loss or reordering. Fragment 0's header is the AD.
FRAMED_HDR = struct.Struct("<QBB10x")
FRAMED_INDEX_AT = 8
FRAMED_COUNT_AT = 9


def _framing():
    """(sealed, gathered) of the --framed trains, shared by the tunnel and
    the relay so that both speak one format:
    - sealed(seal, n, plain): the train carrying `plain` under counter
      `n` (`seal` an AEAD's encrypt): one struct call cuts the
      ciphertext, one join puts the headers between the pieces, one
      strided assignment numbers them;
    - gathered(d): (fragment 0's header, the ciphertext) of a read that
      is one whole train in order (one strided comparison checks it, one
      struct call and one join gather it), else None.
    The structs per count are cached."""
    size = BULK_SEGMENT
    hdr = FRAMED_HDR.size
    room = size - hdr
    pack = FRAMED_HDR.pack
    cuts: dict = {}
    gathers: dict = {}
    index = [bytes(range(n)) for n in range(65536 // size + 2)]

    def sealed(seal, n: int, plain) -> bytearray:
        count = -(-(len(plain) + 16) // room)
        head = pack(n, 0, count)
        ct = seal(b"\0\0\0\0" + head[:8], plain, head)
        k = count - 1
        cut = cuts.get(k)
        if cut is None:
            cut = cuts[k] = struct.Struct(f"{room}s" * k)
        buf = bytearray(head).join((b"", *cut.unpack_from(ct), memoryview(ct)[k * room:]))
        buf[FRAMED_INDEX_AT::size] = index[count]
        return buf

    def gathered(d):
        c = -(-len(d) // size)
        if d[FRAMED_COUNT_AT] != c or d[FRAMED_INDEX_AT::size] != index[c]:
            return None
        k = c - 1
        gather = gathers.get(k)
        if gather is None:
            gather = gathers[k] = struct.Struct(f"{hdr}x{room}s" * k)
        return d[:hdr], b"".join((*gather.unpack_from(d), memoryview(d)[k * size + hdr:]))

    return sealed, gathered


def _framed_pipes(tun: int, sock: socket.socket, tx, rx, InvalidTag):
    """--framed: as --bulk, and the train glued with a header per datagram
    on the way out and gathered on the way in (_framing): the least the
    work of a framing that survives loss and reordering costs in Python,
    the way camex's BULK path does it."""
    sealed, gathered = _framing()

    def up():
        read, send, seal = os.read, sock.send, tx.encrypt
        n = 0
        while True:
            try:
                p = read(tun, 65536)
                n += 1
                send(sealed(seal, n, p))
            except OSError:
                pass

    def down():
        recv, write, open_ = sock.recv, os.write, rx.decrypt
        while True:
            try:
                whole = gathered(recv(65536))
                if whole is None:
                    continue      # not one whole train: dropped, TCP sends it again
                head, ct = whole
                write(tun, open_(b"\0\0\0\0" + head[:8], ct, head))
            except (OSError, InvalidTag, ValueError, IndexError):
                pass

    return up, down


def framed_relay(sock: socket.socket, sides) -> None:
    """--relay: forever, one whole train from one side in, the same train
    sealed again out to the other side. ``sides`` is two (local, peer)
    endpoint pairs: the relay's address towards a tunnel and the tunnel's."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    _bulk_socket(sock)
    sealed, gathered = _framing()
    keys = [_bench_keys(local, peer, AESGCM) for local, peer in sides]
    # A train from side i is opened with i's receive key and sealed with
    # the other side's send key, under that side's own counter.
    route = {}
    for i, (_, peer) in enumerate(sides):
        other = sides[1 - i][1]
        route[peer] = (keys[i][1].decrypt, keys[1 - i][0].encrypt, other, [0])
    recvfrom, sendto = sock.recvfrom, sock.sendto
    while True:
        try:
            d, addr = recvfrom(65536)
            open_, seal, to, counter = route[addr]
            whole = gathered(d)
            if whole is None:
                continue          # not one whole train: dropped, TCP sends it again
            head, ct = whole
            p = open_(b"\0\0\0\0" + head[:8], ct, head)
            counter[0] = n = counter[0] + 1
            sendto(sealed(seal, n, p), to)
        except (OSError, KeyError, InvalidTag, ValueError, IndexError):
            pass


def forward_relay(sock: socket.socket, sides) -> None:
    """--relay --forward: forever, one train from one side in and out
    unopened to the other (the socket's UDP_SEGMENT cuts it as it came)."""
    _bulk_socket(sock)
    other = {sides[0][1]: sides[1][1], sides[1][1]: sides[0][1]}
    recvfrom, sendto = sock.recvfrom, sock.sendto
    while True:
        try:
            d, addr = recvfrom(65536)
            sendto(d, other[addr])
        except (OSError, KeyError):
            pass


def _relay_main(argv) -> int:
    forward = "--forward" in argv
    argv = [a for a in argv if a != "--forward"]
    sides = []
    for arg in argv:
        local, _, peer = arg.partition(",")
        if not peer:
            return _usage()
        sides.append((_addr(local), _addr(peer)))
    if len(sides) != 2 or sides[0][0][1] != sides[1][0][1]:
        return _usage()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", sides[0][0][1]))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"naive relay ({'forward' if forward else 'framed'}) port {sides[0][0][1]}: "
          f"{sides[0][1][0]}:{sides[0][1][1]} <-> {sides[1][1][0]}:{sides[1][1][1]}", flush=True)
    (forward_relay if forward else framed_relay)(sock, sides)
    return 0


def _usage() -> int:
    print(textwrap.dedent(__doc__.split("\n\n")[-2]).strip(), file=sys.stderr)
    return 2


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--relay"]:
        return _relay_main(argv[1:])
    aead = "--aead" in argv
    framed = "--framed" in argv
    bulk = framed or "--bulk" in argv
    threads = aead or bulk or "--threads" in argv
    argv = [a for a in argv if a not in ("--aead", "--bulk", "--framed", "--threads")]
    end = None
    if "--end" in argv:
        at = argv.index("--end")
        if at + 1 >= len(argv):
            return _usage()
        end = _addr(argv[at + 1])
        del argv[at:at + 2]
    if len(argv) != 3 or any(a.startswith("-") for a in argv):
        return _usage()
    name, local, peer = argv[0], _addr(argv[1]), _addr(argv[2])
    tun = open_tun(name, blocking=threads, offload=bulk)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(local)
    sock.connect(peer)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    kind = "framed" if framed else "bulk" if bulk else "aead" if aead else "threads" if threads else "select"
    print(f"naive tunnel ({kind}) {name} {local[0]}:{local[1]} <-> {peer[0]}:{peer[1]}",
          flush=True)
    if not threads:
        select_loop(tun, sock)
        return 0
    def keys(cls):
        return _bench_keys(local, end or peer, cls)

    up, down = (bulk_pipes(tun, sock, keys, framed) if bulk else aead_pipes(tun, sock, keys) if aead
                else plain_pipes(tun, sock))
    threading.Thread(target=up, name="tun-to-udp", daemon=True).start()
    down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
