"""How camex layers hook into Scapy's UDP dissection.

Scapy picks a UDP payload class from port bindings. camex needs more: the
encrypted and control datagrams are recognised by their content (the CX2P
magic) on any port, while plaintext DATA (a bare inner IP packet) can only be
recognised by port. So UDP.guess_payload_class is wrapped once, and every
protocol version registers a *classifier* here: a function
`(udp_packet, payload_bytes, on_camex_port) -> layer class or None`.
Classifiers are tried in priority order (lower first); the first answer wins,
and without one Scapy's normal port bindings decide.

Ports live in `conf.contribs["camex"]["ports"]` (Scapy's place for contrib
settings); `set_ports()` changes them. Default: 7000, the port of the
reference captures (the daemon itself has no default port).
"""

from __future__ import annotations

from typing import Callable
from collections.abc import Iterable

from scapy.config import conf
from scapy.layers.inet import UDP

DEFAULT_PORTS = (7000,)

Classifier = Callable[[object, bytes, bool], "type | None"]
_classifiers: list[tuple[int, str, Classifier]] = []
_original_guess = None


def _settings() -> dict:
    return conf.contribs.setdefault("camex", {"ports": set(DEFAULT_PORTS)})


def set_ports(ports: Iterable[int]) -> None:
    """Replace the UDP ports on which plaintext DATA is recognised."""
    ports = {int(p) for p in ports}
    for p in ports:
        if not 0 < p < 65536:
            raise ValueError(f"port {p} is out of range 1..65535")
    _settings()["ports"] = ports


def get_ports() -> frozenset:
    return frozenset(_settings().setdefault("ports", set(DEFAULT_PORTS)))


def register_classifier(name: str, func: Classifier, priority: int = 100) -> None:
    """Add (or replace, by name) a protocol version's classifier."""
    global _classifiers
    _classifiers = [c for c in _classifiers if c[1] != name]
    _classifiers.append((priority, name, func))
    _classifiers.sort(key=lambda c: (c[0], c[1]))


def classifiers() -> list[str]:
    return [name for _, name, _ in _classifiers]


def classify(payload: bytes, sport: int | None = None, dport: int | None = None,
             udp=None):
    """The camex layer class for a UDP payload, or None if it is not camex."""
    ports = get_ports()
    on_port = sport in ports or dport in ports
    for _, _, func in _classifiers:
        cls = func(udp, payload, on_port)
        if cls is not None:
            return cls
    return None


def _udp_guess_payload_class(self, payload):
    try:
        cls = classify(bytes(payload), self.sport, self.dport, self)
    except Exception:  # a classifier must never break UDP dissection
        cls = None
    if cls is not None:
        return cls
    return _original_guess(self, payload)


def install_udp_hook() -> None:
    """Wrap UDP.guess_payload_class (idempotent)."""
    global _original_guess
    if getattr(UDP.guess_payload_class, "_camex_hook", False):
        return
    _original_guess = UDP.guess_payload_class
    _udp_guess_payload_class._camex_hook = True
    UDP.guess_payload_class = _udp_guess_payload_class
