"""The daemon/core contract (camex.base.contract) holds for every implementation.

Two checks of one thing: `make check` runs mypy on this file, which holds
each core and device to its Protocol statically (the functions below are
annotated with the Protocol types); the tests hold them to it at run time,
member by member, so a core that loses a member the daemons rely on fails
here and not in a lab."""

from __future__ import annotations

import ipaddress

import pytest

from camex.daemon.config import parse_config
from camex.base.contract import (ClientCore, DatagramReceiver, Device, PlainReceiver, ServerCore,
                            SuperPacket)
from camex.legacy.client import LegacyClient
from camex.tunnel.server import ServerMux
from camex.testing.fakes import FakeTun
from camex.tunnel.client import AutoClientCore
from camex.v2.core import V2ClientCore

PW = b"contract-test-passphrase"


def client_cores() -> list[ClientCore]:
    legacy = LegacyClient(auto=True, client_id="C1", key=None)
    v2 = V2ClientCore(auto=False, passphrase=PW,
                      local_cidr=ipaddress.IPv4Interface("10.0.0.2/24"))
    auto = AutoClientCore(V2ClientCore(auto=True, passphrase=PW, client_id="C1"),
                          lambda: LegacyClient(auto=True, client_id="C1", key=None))
    return [legacy, v2, auto]


def server_cores() -> list[ServerCore]:
    cfg = parse_config("[defaults]\ngateway_ip=10.0.0.1\n")
    return [ServerMux(passphrase=PW, encrypt=True, config=cfg),
            ServerMux(passphrase=None, encrypt=False, legacy=True, v2=False)]


def devices() -> list[Device]:
    return [FakeTun()]


def receivers() -> list[DatagramReceiver]:
    return [c.datagram_received for c in client_cores()] + [PlainReceiver(print)]


def members(proto) -> set:
    """What a Protocol promises: its annotated attributes and its methods."""
    names = set()
    for klass in proto.__mro__:
        if klass.__module__ == "camex.base.contract":
            names |= set(getattr(klass, "__annotations__", {}))
            names |= {n for n, v in vars(klass).items()
                      if not n.startswith("_") and (callable(v) or isinstance(v, property))}
    return names


@pytest.mark.parametrize("core", client_cores(), ids=lambda c: type(c).__name__)
def test_every_client_core_has_every_member_of_the_contract(core):
    missing = sorted(n for n in members(ClientCore) if not hasattr(core, n))
    assert not missing
    for name in ("many", "whole", "__call__"):
        assert callable(getattr(core.datagram_received, name))
    assert isinstance(type(core).bulk, bool)     # a capability of the class


@pytest.mark.parametrize("core", server_cores(), ids=["v2+legacy", "legacy"])
def test_every_server_core_has_every_member_of_the_contract(core):
    assert not sorted(n for n in members(ServerCore) if not hasattr(core, n))


def test_fake_tun_is_a_device_and_cuts_super_packets_it_cannot_take():
    tun = devices()[0]
    assert not sorted(n for n in members(Device) if not hasattr(tun, n))
    assert tun.read_items() is None and tun.offload is False
    from camex.base import netpkt
    from camex.v2 import bulk
    payload = bytes(range(256)) * 12                 # 3072 bytes: three segments of 1024
    total = 40 + len(payload)
    ip = (bytes([0x45, 0]) + total.to_bytes(2, "big") + bytes([0, 1, 0x40, 0, 64, 6, 0, 0])
          + bytes([10, 0, 0, 1, 10, 0, 0, 2]))
    tcp = bytes(12) + bytes([0x50, 0x10]) + bytes(6)
    items = bulk.tun_items(1024, ip + tcp + payload)
    assert [type(i) for i in items] == [SuperPacket]
    tun.write_batch(items)
    tun.peer.setblocking(False)
    got = []
    while True:
        try:
            got.append(tun.peer.recv(65535))
        except BlockingIOError:
            break
    assert [len(p) for p in got] == [1064, 1064, 1064]
    assert netpkt.VnetHdr is not None
    tun.close()


def test_a_plain_receiver_takes_a_batch_one_by_one_and_no_read_whole():
    got = []
    r = PlainReceiver(lambda d, now: got.append((d, now)))
    r.many([b"a", b"b"], 1.0)
    r(b"c", 2.0)
    assert got == [(b"a", 1.0), (b"b", 1.0), (b"c", 2.0)]
    assert r.whole(b"abcd", 2, 3.0) is False and len(got) == 3
