"""The contract between the daemons and what they drive.

The daemons (camex.daemon.client, camex.daemon.server) are thin adapters:
they read a TUN device and a UDP socket, hand what they read to an I/O-free
core, and write out what the core queued. This module writes down what each
side may rely on, as `typing.Protocol`s that mypy checks, instead of the
daemons probing objects with getattr/hasattr:

- `DatagramReceiver`: how a core takes datagrams. `__call__` one at a time,
  `many` a UDP GRO batch already split, `whole` a GRO read uncut (True if it
  took it). Every core's `datagram_received` is one (`PlainReceiver` for
  cores without a batched path), so a daemon never asks which paths exist.
- `ClientCore` / `ServerCore`: the queues the daemon drains (`to_net` or
  `outbox`, `to_tun`, `events`), the calls it makes, and capabilities as
  class attributes (`bulk`: the core seals TSO super-packets whole).
  `ClientCoreBase` gives a core without BULK the neutral answers.
- `Device`: a TUN device as the daemons use it; camex.io.tun, camex.io.offload
  and the in-memory fakes implement it.
- `SuperPacket`: what travels from a TSO TUN read to a BULK-capable core and
  from a core to a TUN write: a virtio-net header and one super-packet. The
  GSO run of sealed datagrams is camex.v2.framing.Run.

Nothing here does I/O or imports a backend: the cores may import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar, NamedTuple, Protocol

if TYPE_CHECKING:
    from collections import Counter


# A TSO/USO super-packet: (VnetHdr, packet). Tested with
# `type(x) is SuperPacket` on the hot paths (as cheap as the tuple test it
# replaces); anything else in a packet list is one plain packet. Written in
# the functional form: under `from __future__ import annotations` the class
# form's field annotations are strings, which typing compiles with
# compile(), and a process's first compile() builds the compiler's AST
# types (~0.3 MiB resident for good; see camex.legacy.codec).
SuperPacket = NamedTuple("SuperPacket", [("hdr", Any), ("packet", Any)])


class DatagramReceiver(Protocol):
    """Datagrams into a core. The trailing arguments are the core's own:
    `(address, now)` for a server core, `(now,)` for a client core.
    `one(data, *rest)` does what calling the receiver does, for the one
    datagram of a receive, in as few Python calls as the core can (a v2
    core's flat path for a lone DATA datagram first): the daemons call it
    for every datagram not in a GRO batch."""

    one: Callable[..., None]

    def __call__(self, data: Any, *rest: Any) -> None: ...

    def many(self, datagrams: list, *rest: Any) -> None: ...

    def whole(self, data: Any, size: int, *rest: Any) -> bool: ...


class PlainReceiver:
    """A DatagramReceiver over a one-datagram function: a GRO batch is
    taken datagram by datagram, and no read is taken uncut."""

    __slots__ = ("one",)

    def __init__(self, one: Callable[..., None]):
        self.one = one

    def __call__(self, data: Any, *rest: Any) -> None:
        self.one(data, *rest)

    def many(self, datagrams: list, *rest: Any) -> None:
        one = self.one
        for d in datagrams:
            one(d, *rest)

    def whole(self, data: Any, size: int, *rest: Any) -> bool:
        return False


class Device(Protocol):
    """A TUN device as the daemons drive it."""

    name: str
    path: str
    offload: bool   # a virtio-net header: super-packets in and out
    tso: bool       # TSO is on now (reads may be super-packets)
    why: str        # what the data path is, for the start-up log line

    def fileno(self) -> int: ...

    def read_items(self) -> list | None:
        """One read: its packets (a super-packet as a SuperPacket), or None
        when the queue is empty."""

    def write(self, packet: Any) -> None: ...

    def write_batch(self, items: list) -> None:
        """Write packets and SuperPackets (cut by the device if it has no
        virtio-net header)."""

    def set_tso(self, on: bool) -> bool: ...

    def counters(self) -> dict:
        """Its part of `camex status --json` ("tun"): offload and tso, reads
        that could not be cut (errors), merged segments, GSO writes by type."""

    def close(self) -> None: ...


class ClientCore(Protocol):
    """A client's protocol state machine (legacy, v2 or auto)."""

    protocol: str                 # "legacy" or "v2": the one in use now
    bulk: ClassVar[bool]          # may seal super-packets whole (v2 BULK)
    client_id: str | None
    config: Any                   # the IfConfig applied, or None
    to_net: list                  # datagrams (or a gso.Run) for the server
    to_tun: list                  # packets and SuperPackets for the TUN
    events: list                  # IfConfig and Reconnect for the daemon
    drops: Counter
    last_rx: float | None
    last_register: float
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int

    @property
    def datagram_received(self) -> DatagramReceiver:
        """Datagrams from the server: (data, now)."""

    def start(self, now: float) -> None: ...

    def outer_family(self, ipv6: bool) -> None:
        """The socket to the server is IPv6 (True) or IPv4: default MTU
        and datagram sizes follow the outer header (before connected())."""

    def connected(self, now: float) -> None: ...

    def close(self, now: float) -> None: ...

    def tun_packet(self, packet: Any, now: float) -> None: ...

    def tun_super(self, hdr: Any, packet: Any, now: float) -> None: ...

    @property
    def tun_frame(self) -> Callable[[Any, Any, float], bool] | None:
        """(hdr, packet, now) -> True if it sealed the super-packet of a
        steady stream whole, in one call (camex.v2.lone.client_frame);
        None for a core without one. The daemon tries it before
        bulk_ready and tun_super."""

    def next_deadline(self) -> float: ...

    def on_timer(self, now: float) -> None: ...

    @property
    def bulk_ready(self) -> bool: ...

    def accept_bulk(self, on: bool) -> None: ...

    def tso_max(self) -> int: ...

    def counters(self) -> dict:
        """Protocol counters for `camex status`: BULK frames, and what the
        session refused (keys as `camex status` shows them)."""


class ClientCoreBase:
    """The neutral answers of a client core that cannot carry super-packets
    whole and has no session to close."""

    protocol = "legacy"
    bulk: ClassVar[bool] = False
    bulk_ready = False
    tun_frame: Callable[[Any, Any, float], bool] | None = None

    def close(self, now: float) -> None:
        pass

    def accept_bulk(self, on: bool) -> None:
        pass

    def tso_max(self) -> int:
        return 0

    def tun_super(self, hdr: Any, packet: Any, now: float) -> None:
        raise TypeError(f"{type(self).__name__} does not seal super-packets "
                        "(bulk is False: the daemon cuts them)")

    def counters(self) -> dict:
        return {}


class ServerCore(Protocol):
    """A server's protocol state machine (camex.tunnel.server.ServerMux)."""

    outbox: list                  # (datagram or gso.Run, endpoint) pairs
    to_tun: list                  # packets and SuperPackets for the server's TUN

    @property
    def datagram_received(self) -> DatagramReceiver:
        """Datagrams from clients: (data, addr, now)."""

    def datagrams_received(self, items: list, now: float,
                           other: Callable[[Any, Any, int, float], None]) -> None:
        """A batched receive, [(data, addr, GRO size)] from any senders;
        what the core does not take goes, as bytes and in order, to
        `other(data, addr, size, now)`."""

    def tun_packet(self, packet: Any, now: float | None = None) -> None: ...

    def tun_super(self, hdr: Any, packet: Any, now: float | None = None) -> None: ...

    @property
    def bulk_ready(self) -> bool: ...

    def tso_max(self) -> int | None: ...

    def next_deadline(self) -> float: ...

    def on_timer(self, now: float) -> None: ...

    def reload(self, config: Any, passphrase: bytes | None, now: float) -> None: ...

    def close(self, now: float) -> None: ...

    def status_clients(self, now: float) -> list: ...

    def drops(self) -> dict: ...

    def v2_counters(self) -> dict: ...

    def refusals(self) -> dict: ...
