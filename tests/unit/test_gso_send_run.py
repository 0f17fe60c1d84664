"""gso.Sender.send_run (a client's one-BULK-frame send) against send([run]).

A socket that records its calls (and fails as told) sees the same calls,
the Sender the same state, whichever of the two sends a Run: a steady
frame in one sendmsg with its UDP_SEGMENT size; a frame above the path
MTU (EMSGSIZE) one datagram at a time, and that size so from then on;
GSO refused (EIO) off for good, with one reason for the log; any other
error to on_error; a Run of one datagram, or more than one send holds,
as send() cuts it.
"""

from __future__ import annotations

import errno

import pytest

from camex.io import gso
from camex.v2.framing import Run


class RecordingSocket:
    """sendmsg/send as a connected UDP socket takes them, recorded;
    `fail` maps a GSO size to the errno its sendmsg raises."""

    def __init__(self, fail=None):
        self.calls = []
        self.fail = dict(fail or {})

    def sendmsg(self, buffers, anc=(), flags=0, addr=None):
        data = b"".join(bytes(b) for b in buffers)
        sizes = [int.from_bytes(d, "little") for lvl, typ, d in anc
                 if (lvl, typ) == (gso.SOL_UDP, gso.UDP_SEGMENT)]
        size = sizes[0] if sizes else None
        if size in self.fail:
            raise OSError(self.fail[size], "refused")
        self.calls.append(("sendmsg", size, data) + ((addr,) if addr else ()))
        return len(data)

    def send(self, data):
        self.calls.append(("send", None, bytes(data)))
        return len(data)

    def sendto(self, data, addr):
        self.calls.append(("sendto", None, bytes(data), addr))
        return len(data)


def glued(size: int, n: int, last: int) -> Run:
    """A Run of n datagrams of `size` bytes, the last one `last` bytes."""
    buf = b"".join(bytes([i]) * size for i in range(n - 1)) + bytes([n - 1]) * last
    return Run(bytearray(buf), size)


def both(runs, fail=None, addr=None):
    """The calls and state after send_run and after send([run]), each run
    in turn, to `addr` (None: a connected socket)."""
    out = []
    for way in ("send_run", "send"):
        errors: list = []
        sock = RecordingSocket(fail)
        s = gso.Sender(sock, True, lambda e, addr, errors=errors: errors.append(e.errno))
        reasons = []
        for r in runs:
            if way == "send_run":
                s.send_run(r, addr)
            else:
                s.send([r], addr)
            reasons.append(s.fallback_reason)
            s.fallback_reason = None
        out.append((sock.calls, s.sends, s.gso, list(s.max_sizes), reasons, errors))
    assert out[0] == out[1]
    return out[0]


def test_a_steady_frame_is_one_sendmsg_with_its_size():
    calls, sends, on, _, reasons, errors = both([glued(1472, 44, 700), glued(1472, 3, 10)])
    assert [(c[0], c[1], len(c[2])) for c in calls] == [("sendmsg", 1472, 43 * 1472 + 700),
                                                         ("sendmsg", 1472, 2 * 1472 + 10)]
    assert sends == 2 and on and reasons == [None, None] and not errors


def test_above_the_path_mtu_one_by_one_from_then_on():
    calls, _, on, max_sizes, reasons, _ = both([glued(1472, 5, 100), glued(1472, 2, 100),
                                                glued(1000, 3, 10)], fail={1472: errno.EMSGSIZE})
    assert max_sizes[0] == 1471 and on and reasons == [None] * 3
    kinds = [(c[0], len(c[2])) for c in calls]
    # The first frame after its refusal and the second one: datagram by
    # datagram; a smaller size still goes in one GSO send.
    assert kinds == [("send", 1472)] * 4 + [("send", 100)] + [("send", 1472), ("send", 100)] \
        + [("sendmsg", 2010)]


def test_gso_refused_goes_off_for_good_with_one_reason():
    calls, _, on, _, reasons, _ = both([glued(1472, 3, 100), glued(1472, 3, 100)],
                                       fail={1472: errno.EIO})
    assert not on and reasons[0].startswith("UDP GSO refused") and reasons[1] is None
    assert [c[0] for c in calls] == ["send"] * 6


@pytest.mark.parametrize("code", [errno.ENOBUFS, errno.ENETUNREACH])
def test_other_errors_go_to_on_error(code):
    calls, _, on, _, _, errors = both([glued(1472, 3, 100)], fail={1472: code})
    assert calls == [] and on and errors == [code]


def test_one_datagram_and_oversized_runs_as_send_cuts_them():
    calls, _, _, _, _, _ = both([Run(bytearray(b"x" * 900), 1472), glued(100, 70, 100),
                                 glued(1472, 46, 1472)])
    assert calls[0] == ("send", None, b"x" * 900)
    # 70 datagrams: more than one GSO send takes (64), 46 of 1472 bytes:
    # more bytes than one send takes; each is two sendmsg.
    assert [(c[1], len(c[2])) for c in calls[1:]] == [(100, 6400), (100, 600),
                                                      (1472, 44 * 1472), (1472, 2 * 1472)]


@pytest.mark.parametrize("addr", [("192.0.2.7", 4001), ("::ffff:192.0.2.7", 4001, 0, 0),
                                  ("2001:db8::7", 4001, 0, 0)])
def test_a_server_sends_a_relayed_frame_to_its_address(addr):
    """The server's send of a frame relayed whole: to the client's address,
    the path MTU's limit kept per outer family (IPv6 peers' paths are 20
    bytes shorter; a v4-mapped address is an IPv4 peer)."""
    calls, _, _, max_sizes, _, _ = both([glued(1472, 3, 100)], addr=addr)
    assert calls == [("sendmsg", 1472, glued(1472, 3, 100).buf, addr)]
    calls, _, _, max_sizes, _, _ = both([glued(1472, 3, 100)], fail={1472: errno.EMSGSIZE},
                                        addr=addr)
    v6 = addr[0] == "2001:db8::7"
    assert max_sizes == ([65535, 1471] if v6 else [1471, 65535])
    assert [c[0] for c in calls] == ["sendto"] * 3 and all(c[3] == addr for c in calls)
