"""The C-client model (lab/cclient.py) does what the spec says the deployed
C client does, against a server written here from the spec: it drops a
restarted server's counter (flaw 5: its one window is never reset, not
even by a reconnect), and reconnects from a new socket after silence with
a REGISTER. If the model did not, the restart tests would prove nothing."""

import socket

import pytest

from tests.support import spec_wire
from lab.attacks import icmp_echo
from lab.cclient import CClient, REGISTER_EVERY, RETRY_EVERY, SILENCE_RECONNECT
from lab.netns import PORT, wait_until

pytestmark = pytest.mark.lab

PSK = "model-secret"


def test_the_spec_timers_are_the_defaults():
    assert (REGISTER_EVERY, SILENCE_RECONNECT, RETRY_EVERY) == (30.0, 20.0, 5.0)


def test_one_window_for_life_and_a_new_socket_after_silence(star):
    lab = star
    srv = lab.server.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((lab.c1.server_ip, PORT))
    srv.settimeout(5)
    key = spec_wire.key(PSK)
    c = CClient(lambda: lab.c1.socket(socket.AF_INET, socket.SOCK_DGRAM),
                (lab.c1.server_ip, PORT), PSK.encode(), local_ip="10.0.0.2",
                silence_reconnect=1.0, retry_every=1.0).start()
    try:
        data, first = srv.recvfrom(2000)
        ptype, _, _, text = spec_wire.open_frame(key, data)
        assert (ptype, text) == (spec_wire.REGISTER, b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.2\n")

        def ping_from_server(prefix, seq, n):
            srv.sendto(spec_wire.seal(key, spec_wire.DATA, prefix, seq,
                                      icmp_echo("10.0.0.3", "10.0.0.2", 7, n)), first)

        # The old server's counter reached 1000; a restarted one (new prefix,
        # counter from 0) is dropped whatever its prefix.
        ping_from_server(b"OLD!", 1000, 1)
        _, _, _, reply = spec_wire.open_frame(key, srv.recvfrom(2000)[0])
        assert reply[20] == 0   # the echo reply
        for n in range(5):
            ping_from_server(b"NEW!", n, 2 + n)
        wait_until(lambda: len(c.dropped) == 5 or None, 5, "5 drops")
        assert sum("Dropped packet from server" in line for line in c.log) == 5
        # Silence: a new socket (new source port) and a REGISTER on it.
        srv.settimeout(5)
        while True:
            data, addr = srv.recvfrom(2000)
            if addr != first:
                break
        ptype, _, _, text = spec_wire.open_frame(key, data)
        assert ptype == spec_wire.REGISTER and addr[1] != first[1] and c.reconnects
        # The window survived the reconnect: still dropped.
        srv.sendto(spec_wire.seal(key, spec_wire.DATA, b"NEW!", 900,
                                  icmp_echo("10.0.0.3", "10.0.0.2", 7, 99)), addr)
        wait_until(lambda: len(c.dropped) == 6 or None, 5, "a drop after the reconnect")
        srv.sendto(spec_wire.seal(key, spec_wire.DATA, b"NEW!", 1001,
                                  icmp_echo("10.0.0.3", "10.0.0.2", 7, 100)), addr)
        wait_until(lambda: c.rx >= 2 or None, 5, "the next counter taken")
    finally:
        c.stop()
        srv.close()
