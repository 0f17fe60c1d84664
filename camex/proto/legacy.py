"""Scapy layers of the legacy camex protocol ("v1", magic CX2P).

Wire format: docs/LEGACY.md. Layers:

  plaintext mode
    CX2PControl        `CX2P VERB` ... the start of a control line
      CX2PRegister     ` KEY=VALUE`... `\\n` of a REGISTER (verb dispatch)
      CX2PConfig       same for CONFIG
      CX2PControlBody  any other verb
        CX2PParam      one ` KEY=VALUE` (or bare ` TOKEN`) token
    CX2PData           plaintext DATA: no header, the payload is the inner
                       IP/IPv6 packet (recognised by port only)
  encrypted mode
    CX2PEncrypted      the 27-byte header; `type` dispatches to
      CX2PSealedRegister / CX2PSealedData / CX2PSealedConfig
                       ciphertext + 16-byte tag (CX2PSealed for other types)

Lengths (`length`) and the nonce counter (`nonce_seq`, = `seq`) are filled in
by post_build when left at None. Decrypting and sealing are in
camex.proto.crypto (they use camex.legacy.codec, the daemon's one AEAD path).
"""

from __future__ import annotations

import struct

from scapy.fields import (ByteEnumField, ConditionalField, LongField,
                          PacketListField, ShortField, StrField,
                          StrFixedLenField, XStrFixedLenField)
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Packet, Raw, bind_layers, bind_top_down

from camex.legacy import codec
from camex.proto import registry
from camex.proto.fields import EqualsField, SpaceRunField, TailField, TokenField

TYPES = dict(codec.TYPE_NAMES)


def inner_class(data: bytes):
    """Layer class for an inner packet, from its IP version nibble."""
    # Too short for the version's header: Raw (Scapy's IP would raise).
    if data:
        version = data[0] >> 4
        if version == 4 and len(data) >= 20:
            return IP
        if version == 6 and len(data) >= 40:
            return IPv6
    return Raw


# ------------------------------------------------------------ control text


class CX2PParam(Packet):
    """One token of a control line: ` KEY=VALUE`, or a bare ` TOKEN`."""

    name = "CX2P field"
    fields_desc = [
        SpaceRunField("sep", b" "),
        TokenField("key", b"", stops=b"= \n"),
        EqualsField("eq", b"="),
        ConditionalField(TokenField("value", b"", stops=b" \n"),
                         lambda pkt: pkt.eq == b"="),
    ]

    def extract_padding(self, s):
        return b"", s

    def mysummary(self):
        text = bytes(self.key) + (bytes(self.eq) + bytes(self.value or b"") if self.eq else b"")
        return text.decode("ascii", "backslashreplace")


def _next_param(pkt, lst, cur, remain):
    # Another token follows only after a space; `\n` (or anything else) ends
    # the list and goes to the `eol` field.
    return CX2PParam if remain[:1] == b" " else None


class CX2PControl(Packet):
    """Start of a control line: the magic and the verb."""

    name = "CX2P control"
    fields_desc = [
        StrFixedLenField("magic", codec.MAGIC, 4),
        SpaceRunField("sep", b" "),
        TokenField("verb", b"", stops=b" \n"),
    ]

    def mysummary(self):
        return "CX2P " + bytes(self.verb).decode("ascii", "backslashreplace")

    def default_payload_class(self, payload):
        return CX2PControlBody


class CX2PControlBody(Packet):
    """KEY=VALUE tokens of a control line and its end (`\\n`)."""

    name = "CX2P control fields"
    fields_desc = [
        # no cap at Scapy's 100 items: a datagram's params are bounded by its size
        PacketListField("params", [], next_cls_cb=_next_param, max_count=1 << 16),
        # The newline, plus anything after it (a conforming line has none).
        StrField("eol", b"\n"),
    ]

    def get(self, key, default=None):
        """First VALUE of KEY (as str), like codec.Control.get."""
        for p in self.params:
            if p.eq and p.key == key.encode():
                return p.value.decode("ascii", "replace")
        return default

    def get_all(self, key) -> list:
        return [p.value.decode("ascii", "replace") for p in self.params
                if p.eq and p.key == key.encode()]

    def pairs(self) -> list:
        return [(p.key.decode("ascii", "replace"), p.value.decode("ascii", "replace"))
                for p in self.params if p.eq]

    def mysummary(self):
        verb = (bytes(self.underlayer.verb).decode("ascii", "backslashreplace")
                if isinstance(self.underlayer, CX2PControl) else "?")
        text = " ".join(p.mysummary() for p in self.params)
        return f"CX2P {verb} {text}".rstrip()


class CX2PRegister(CX2PControlBody):
    name = "CX2P REGISTER"


class CX2PConfig(CX2PControlBody):
    name = "CX2P CONFIG"


def params(*pairs) -> list:
    """CX2PParam list from (key, value) pairs; a value of None is a bare token."""
    out = []
    for key, value in pairs:
        if value is None:
            out.append(CX2PParam(key=key, eq=b""))
        else:
            out.append(CX2PParam(key=key, value=str(value)))
    return out


# ------------------------------------------------------------- plain data


class CX2PData(Packet):
    """Plaintext DATA: no header of its own, the payload is the inner packet."""

    name = "CX2P DATA (plaintext)"
    fields_desc = []

    def guess_payload_class(self, payload):
        return inner_class(payload)

    def mysummary(self):
        return "CX2P DATA"


# -------------------------------------------------------- encrypted framing


class CX2PEncrypted(Packet):
    """The 27-byte header of every encrypted datagram (also the AEAD's AD)."""

    name = "CX2P encrypted"
    fields_desc = [
        StrFixedLenField("magic", codec.MAGIC, 4),
        ByteEnumField("type", codec.T_DATA, TYPES),
        XStrFixedLenField("prefix", b"\0\0\0\0", 4),
        LongField("nonce_seq", None),  # nonce counter; None: same as seq
        ShortField("length", None),    # plaintext length; None: computed
        LongField("seq", 0),
    ]

    def post_build(self, p, pay):
        if self.nonce_seq is None:
            p = p[:9] + struct.pack("!Q", self.seq) + p[17:]
        if self.length is None:
            # payload = ciphertext + tag; plaintext length = ciphertext length
            p = p[:17] + struct.pack("!H", max(0, len(pay) - codec.TAG_LEN) & 0xFFFF) + p[19:]
        return p + pay

    def default_payload_class(self, payload):
        return CX2PSealed

    def mysummary(self):
        return self.sprintf("CX2P %type% seq=%seq% len=%length%")

    @property
    def nonce(self) -> bytes:
        seq = self.seq if self.nonce_seq is None else self.nonce_seq
        return bytes(self.prefix) + int(seq).to_bytes(8, "big")


class CX2PMalformed(Packet):
    """A datagram with the CX2P magic that is too short for the 27-byte header."""

    name = "CX2P malformed"
    fields_desc = [StrField("data", b"")]

    def mysummary(self):
        return f"CX2P malformed ({len(self.data)} bytes)"


class CX2PSealed(Packet):
    """Ciphertext and Poly1305 tag (decrypt with camex.proto.crypto)."""

    name = "CX2P sealed"
    fields_desc = [
        TailField("ciphertext", b"", codec.TAG_LEN),
        XStrFixedLenField("tag", b"\0" * codec.TAG_LEN, codec.TAG_LEN),
    ]

    def extract_padding(self, s):
        return b"", s

    def mysummary(self):
        hdr = self.underlayer
        if isinstance(hdr, CX2PEncrypted):
            return hdr.sprintf("CX2P %type% seq=%seq% len=%length%") + " (sealed)"
        return f"CX2P {len(self.ciphertext)} bytes sealed"


class CX2PSealedRegister(CX2PSealed):
    name = "CX2P sealed REGISTER"


class CX2PSealedData(CX2PSealed):
    name = "CX2P sealed DATA"


class CX2PSealedConfig(CX2PSealed):
    name = "CX2P sealed CONFIG"


SEALED_CLASSES = {codec.T_REGISTER: CX2PSealedRegister,
                  codec.T_DATA: CX2PSealedData,
                  codec.T_CONFIG: CX2PSealedConfig}
CONTROL_CLASSES = {b"REGISTER": CX2PRegister, b"CONFIG": CX2PConfig}

for _t, _cls in SEALED_CLASSES.items():
    bind_layers(CX2PEncrypted, _cls, type=_t)
for _verb, _cls in CONTROL_CLASSES.items():
    bind_layers(CX2PControl, _cls, verb=_verb)

# Building IP()/UDP()/CX2P...() fills in the reference port; dissection does
# not use these bindings (the classifier below decides, by content and port).
for _cls in (CX2PControl, CX2PEncrypted, CX2PData):
    bind_top_down(UDP, _cls, dport=registry.DEFAULT_PORTS[0])


# ------------------------------------------------------------ classifier


def classify(udp, payload: bytes, on_port: bool):
    """Legacy classifier for registry: which CX2P layer a UDP payload is."""
    if payload[:5] == b"CX2P ":
        return CX2PControl
    if payload[:4] == codec.MAGIC:
        # Off the camex ports, insist on a known type and a whole header: a
        # 5-byte signature is strong, but random UDP may start with "CX2P".
        if len(payload) >= codec.HEADER_LEN and (on_port or payload[4] in TYPES):
            return CX2PEncrypted
        if on_port:
            return CX2PMalformed
    if on_port:
        return CX2PData
    return None


def register() -> None:
    registry.register_classifier("legacy", classify, priority=100)
