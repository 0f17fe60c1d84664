"""camex against peers written from the spec alone
(tests/support/spec_wire.py), in place of the deployed C implementation: a
spec-only client behind the camex server talks to a real camex client, and
a real camex client is configured and served by a spec-only server,
including that server's restart (new sender prefix, sequence numbers from 0
again: legacy flaw 5)."""

import os
import socket
import struct

import pytest

from lab.attacks import inet_checksum
from lab.daemons import GLOBAL_PSK
from lab.netns import wait_until
from tests.support import spec_wire


pytestmark = pytest.mark.lab


def echo_request(src: str, dst: str, ident: int, seq: int, payload: bytes = b"camex-spec-peer") -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", inet_checksum(icmp)) + icmp[4:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), ident, 0, 64, 1, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", inet_checksum(hdr)) + hdr[12:]
    return hdr + icmp


def is_echo_reply(pkt: bytes, src: str, dst: str, ident: int, seq: int) -> bool:
    if len(pkt) < 28 or pkt[0] != 0x45 or pkt[9] != 1:
        return False
    if pkt[12:16] != socket.inet_aton(src) or pkt[16:20] != socket.inet_aton(dst):
        return False
    typ, _code, _ck, i, s = struct.unpack("!BBHHH", pkt[20:28])
    return typ == 0 and (i, s) == (ident, seq)


class SpecPeer:
    """A UDP socket in a namespace speaking the legacy protocol by the spec."""

    def __init__(self, ns, passphrase, bind=None, connect=None):
        self.key = spec_wire.key(passphrase) if passphrase else None
        self.prefix = os.urandom(4)
        self.seq = 0
        self.sock = ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.2)
        if bind:
            self.sock.bind(bind)
        if connect:
            self.sock.connect(connect)
        self.peer = connect

    def frame(self, ptype: int, plaintext: bytes) -> bytes:
        if self.key is None:
            return plaintext
        f = spec_wire.seal(self.key, ptype, self.prefix, self.seq, plaintext)
        self.seq += 1
        return f

    def send(self, ptype: int, plaintext: bytes, to=None) -> None:
        self.sock.sendto(self.frame(ptype, plaintext), to or self.peer)

    def receive(self, want, timeout: float = 10.0):
        """Wait for a datagram whose (type, plaintext) satisfies ``want``;
        return (type, plaintext, sender). Type is None in plaintext mode."""
        found = {}

        def check():
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                return None
            if self.key is None:
                ptype, pt = None, data
            else:
                ptype, _prefix, _seq, pt = spec_wire.open_frame(self.key, data)
            if want(ptype, pt):
                found["r"] = (ptype, pt, addr)
                return True
            return None

        wait_until(check, timeout, "a matching datagram", interval=0.0)
        return found["r"]

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "enc"])
def test_spec_client_through_camex_server_to_camex_client(camex, star, encrypted):
    psk = GLOBAL_PSK if encrypted else None
    srv = camex.start_server(encrypt=encrypted, psk=psk)
    camex.start_client(star.c2, encrypt=encrypted, psk=psk)
    peer = SpecPeer(star.c1, psk, connect=("10.250.0.1", 7000))
    try:
        peer.send(spec_wire.REGISTER, b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.2\n")
        port = peer.sock.getsockname()[1]
        srv.wait_for_line(rf"client 10\.0\.0\.2 at 10\.250\.0\.2:{port} registered", timeout=10)
        for seq in range(1, 4):
            peer.send(spec_wire.DATA, echo_request("10.0.0.2", "10.0.0.3", 0x4358, seq))
            ptype, pkt, sender = peer.receive(
                lambda t, p, s=seq: t in (None, spec_wire.DATA) and is_echo_reply(p, "10.0.0.3", "10.0.0.2", 0x4358, s))
            assert sender == ("10.250.0.1", 7000)
    finally:
        peer.close()


CONFIG_LINE = (b"CX2P CONFIG CLIENT_ID=C1 MTU=1400 LOCAL_CIDR=10.0.0.2/24 "
               b"GATEWAY_IP=10.0.0.1 ROUTE_CIDR=10.251.0.0/24\n")


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "enc"])
def test_camex_client_against_spec_server_and_its_restart(camex, star, encrypted):
    psk = GLOBAL_PSK if encrypted else None
    server = SpecPeer(star.server, psk, bind=("10.250.0.1", 7000))
    try:
        c1 = camex.start_client(star.c1, wait=False, auto=True, encrypt=encrypted, psk=psk)
        register = b"CX2P REGISTER MODE=AUTO CLIENT_ID=C1\n"
        _, _, client = server.receive(lambda t, p: p == register and t in (None, spec_wire.REGISTER))
        server.send(spec_wire.CONFIG, CONFIG_LINE, to=client)
        dev = camex.wait_client(c1)
        assert star.c1.links()[dev]["mtu"] == 1400
        assert ("10.251.0.0/24", dev) in {(r["dst"], r["dev"]) for r in star.c1.routes()}

        def ping_through(ident, seq):
            server.send(spec_wire.DATA, echo_request("10.0.0.3", "10.0.0.2", ident, seq), to=client)
            server.receive(lambda t, p: t in (None, spec_wire.DATA)
                           and is_echo_reply(p, "10.0.0.2", "10.0.0.3", ident, seq))

        for seq in range(1, 21):
            ping_through(0x0C1, seq)
        # The server restarts: a new sender prefix and a counter from 0
        # again. The client must take the new server's traffic at once.
        server.prefix, server.seq = os.urandom(4), 0
        for seq in range(1, 4):
            ping_through(0x0C2, seq)
        assert c1.running()
    finally:
        server.close()
