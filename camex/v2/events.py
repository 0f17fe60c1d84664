"""What the v2 state machines hand back to the daemon.

The client's outputs all go to its one server, so its Send has addr None.
"""

# No `from __future__ import annotations`: the NamedTuples would cost the
# daemon ~0.3 MiB (see camex.legacy.codec).
from typing import NamedTuple, Any


class Send(NamedTuple):
    data: bytes
    addr: Any = None          # (host, port); None on the client: "to the server"


class Deliver(NamedTuple):
    packets: list             # inner IP packets, already source-checked on the server
    peer: Any = None          # server: the Peer they came from


class DeliverFrame(NamedTuple):
    """The records of an authenticated BULK frame: [(gso_size, packet)],
    gso_size 0 for a complete packet (camex.v2.bulk turns them into TUN
    writes). On the server, already source-checked."""
    records: list
    peer: Any = None
    plain: Any = None         # server: the frame's plaintext, if every record passed


class Up(NamedTuple):
    """Client: a session is established (first time, or with a new config).
    Server: a peer's first session is confirmed, or its grant changed."""
    config: Any = None        # client: wire.Config (auto-mode parameters) or None
    peer: Any = None          # server: the Peer


class Down(NamedTuple):
    """Client: no usable session any more. Server: a peer is gone."""
    reason: str
    peer: Any = None


class Refused(NamedTuple):
    """Client: the server authenticated and refused us (wire.ERR_*)."""
    code: int
    message: str


# What Session.open and open_frame return instead of a plaintext. Here rather
# than in camex.v2.session so that camex.v2.bulk (which a plaintext legacy
# server uses to cut TSO reads) needs no session, hence no cryptography.
REPLAY = "replay"
FORGED = "forged"
TOO_OLD = "reject-after-messages"


class Roamed(NamedTuple):
    """Server: an authenticated, replay-checked packet came from a new endpoint."""
    peer: Any
    old: Any
    new: Any
