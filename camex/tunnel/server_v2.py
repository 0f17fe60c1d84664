"""The v2 half of camex.tunnel.server.ServerMux: camex.v2.core.V2ServerCore
with the policy of a server that also speaks legacy. A module of its own so
that ServerMux imports v2 (and with it `cryptography`) only when v2 is on."""

from __future__ import annotations

from ..v2 import wire
from ..v2.core import V2ServerCore
from ..v2.events import Up
from ..v2.server import Grant
from ..legacy.server import LegacyServer


def _behind(profile) -> list:
    """Networks behind a client: `allowed_cidr=` of its section."""
    return list(profile.allowed) if profile is not None else []


class V2Half(V2ServerCore):
    """V2ServerCore with the policy of a server that also speaks legacy:
    addresses pinned to a client section, or held by a live legacy client
    of another identity, are refused; a client that comes back over v2
    takes its address from its own legacy entry."""

    def __init__(self, mux, **kw):
        self.mux = mux
        super().__init__(behind_for=_behind, **kw)

    def _authorize(self, client_id: str, request):
        mux = self.mux
        cid = (client_id or "").lower()
        if not request.auto:
            for local in (request.local_cidr, request.local_cidr6):
                owner = mux.pinned_owner(local.ip) if local is not None else None
                if owner is not None and owner != cid:
                    return wire.Refusal(wire.ERR_ADDRESS,
                                        f"{local.ip} belongs to another client")
        grant = super()._authorize(client_id, request)
        if isinstance(grant, Grant) and mux.legacy is not None and grant.address.version == 4:
            other = mux.legacy.identity_of(grant.address.packed)
            me = (mux.key_name(client_id), cid or None)
            if other is not None and not LegacyServer._same_client(other, me):
                return wire.Refusal(wire.ERR_ADDRESS,
                                    f"{grant.address} is in use by a legacy client")
        return grant

    def _handle(self, actions, now: float) -> None:
        if self.mux.legacy is not None:
            for a in actions:
                if isinstance(a, Up) and a.peer.grant.address.version == 4:
                    self.mux.legacy.evict(a.peer.grant.address.packed, "moved to protocol v2")
        super()._handle(actions, now)
