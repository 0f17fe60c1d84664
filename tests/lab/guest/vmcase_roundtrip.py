"""A real round trip through camex.ko, run INSIDE a VM (see vmlib.py).

An ICMP echo request written to /dev/camex enters the guest's stack as if
it had arrived on the camex interface; the kernel answers it, routes the
echo reply back out of camex, and it is read from /dev/camex.
"""

import os
import select
import struct

from vmlib import LOCAL, PEER, icmp_echo, loaded, open_dev, parse_ipv4, stats


def test_icmp_echo_request_written_comes_back_as_echo_reply():
    with loaded():
        fd = open_dev()
        try:
            before = stats()
            payload = bytes(range(56))
            os.write(fd, icmp_echo(PEER, LOCAL, ident=0x4321, seq=7, data=payload))
            assert select.select([fd], [], [], 10)[0] == [fd], "no reply queued"
            reply = parse_ipv4(os.read(fd, 2000))
            assert reply["header_ok"]
            assert (reply["src"], reply["dst"], reply["proto"]) == (LOCAL, PEER, 1)
            icmp_type, code, _, ident, seq = struct.unpack("!BBHHH", reply["payload"][:8])
            assert (icmp_type, code, ident, seq) == (0, 0, 0x4321, 7)
            assert reply["payload"][8:] == payload
            after = stats()
            assert after["rx_packets"] == before["rx_packets"] + 1
            assert after["tx_packets"] == before["tx_packets"] + 1
        finally:
            os.close(fd)
