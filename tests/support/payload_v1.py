"""The version-1 handshake payload decoder, frozen as camex released it
before payload version 2 (camex/v2/wire.py up to the commit that added
IPv6 inside the tunnel), so that tests can show what an old camex peer
does with a version-2 payload (docs/PROTOCOL.md §4.6, "Versions").

Its rules: unknown types are skipped; a known type with a wrong length
makes the whole payload malformed (None); at most 16 routes."""

from __future__ import annotations

import ipaddress

MODE, LOCAL, GW, ROUTE, MTU, ERROR, FEATURES = 1, 2, 3, 4, 5, 6, 7
MAX_ROUTES = 16


def _tlvs(data: bytes):
    pos = 0
    while pos + 2 <= len(data):
        t, n = data[pos], data[pos + 1]
        v = data[pos + 2:pos + 2 + n]
        if len(v) != n:
            raise ValueError("truncated TLV")
        yield t, v
        pos += 2 + n
    if pos != len(data):
        raise ValueError("stray byte after TLVs")


def _iface(v: bytes) -> ipaddress.IPv4Interface:
    if len(v) != 5 or v[4] > 32:
        raise ValueError("bad CIDR")
    return ipaddress.IPv4Interface((ipaddress.IPv4Address(v[:4]), v[4]))


def _mtu(v: bytes) -> int:
    m = int.from_bytes(v, "big")
    if len(v) != 2 or not 576 <= m <= 9000:
        raise ValueError("bad MTU")
    return m


def decode_request(data: bytes) -> dict | None:
    req = {"auto": False, "local_cidr": None, "mtu": None, "features": 0}
    try:
        for t, v in _tlvs(data):
            if t == MODE and len(v) == 1:
                req["auto"] = v[0] == 1
            elif t == LOCAL:
                req["local_cidr"] = _iface(v)
            elif t == MTU:
                req["mtu"] = _mtu(v)
            elif t == FEATURES and len(v) >= 1:
                req["features"] = v[0]
    except ValueError:
        return None
    return req


def decode_config(data: bytes) -> dict | None:
    """A dict of the configuration, {"error": (code, text)} for a refusal,
    or None if malformed."""
    cfg: dict = {"local_cidr": None, "gateway_ip": None, "routes": [], "mtu": None,
                 "features": 0}
    try:
        for t, v in _tlvs(data):
            if t == ERROR and len(v) >= 1:
                return {"error": (v[0], v[1:].decode("utf-8", "replace"))}
            if t == LOCAL:
                cfg["local_cidr"] = _iface(v)
            elif t == GW and len(v) == 4:
                cfg["gateway_ip"] = ipaddress.IPv4Address(v)
            elif t == ROUTE:
                if len(cfg["routes"]) < MAX_ROUTES:
                    cfg["routes"].append(_iface(v).network)
            elif t == MTU:
                cfg["mtu"] = _mtu(v)
            elif t == FEATURES and len(v) >= 1:
                cfg["features"] = v[0]
    except ValueError:
        return None
    return cfg
