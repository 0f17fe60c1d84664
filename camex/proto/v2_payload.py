"""Scapy layers for what travels inside camex v2's AEADs (docs/PROTOCOL.md).

    CamexV2Records      DATA plaintext: records u16be length | inner packet;
                        a zero length ends the list (the rest is padding)
    CamexV2BulkRecords  BULK frame plaintext (docs/V2-BULK.md): records
                        u16be length | u16be gso_size | inner IPv4 packet;
                        gso_size > 0 marks a TSO super-packet (one IPv4+TCP/UDP
                        header over up to ~64 KiB, checksum field = the
                        pseudo-header partial sum), a zero length ends the list
    CamexV2Payload      handshake payload (INIT request, RESP configuration):
                        TLVs type u8 | length u8 | value (§4.6), one class per
                        known type (CamexV2TlvMode ... CamexV2TlvRoute6) and
                        CamexV2Tlv for unknown types or odd lengths

None of these layers ever raises on what it dissects and each rebuilds the
exact bytes it read (lengths are kept as read; None fills them in when
building). They depend on camex.v2.wire only, never on the message layers
in v2.py, so both may import this module.
"""

from __future__ import annotations

from collections.abc import Iterable

from scapy.fields import (ByteEnumField, ByteField, FieldLenField, FlagsField,
                          IP6Field, IPField, PacketListField, ShortField, StrField,
                          StrLenField)
from scapy.packet import Packet

from camex.proto.legacy import inner_class
from camex.v2 import wire

# Scapy stops a list at conf.max_list_count (100) items by raising; a
# plaintext may hold far more tiny records (or TLVs), each at least 2 bytes,
# so no list here can exceed 32768 items of a 64 KiB input.
MAX_ITEMS = 1 << 16

# ------------------------------------------------------------ DATA records


class _RecordBase(Packet):
    """A record: a u16be `length` first (filled in when None), then the
    inner packet as the payload, dissected as IP/IPv6 by its version."""

    def post_build(self, p, pay):
        if self.length is None:
            p = len(pay).to_bytes(2, "big") + p[2:]
        return p + pay

    def extract_padding(self, s):
        n = self.length or 0
        return s[:n], s[n:]

    def guess_payload_class(self, payload):
        return inner_class(payload)


class CamexV2Record(_RecordBase):
    """One record of a DATA plaintext: u16be length, then the inner packet."""

    name = "camex v2 record"
    fields_desc = [ShortField("length", None)]

    def mysummary(self):
        return f"record {self.length}"


def _next_record(pkt, lst, cur, remain):
    # A record follows while two length bytes remain and the length is not 0
    # (a zero length ends the list; what follows is padding).
    if len(remain) >= 2 and (remain[0] or remain[1]):
        return CamexV2Record
    return None


class CamexV2Records(Packet):
    """The decrypted content of a DATA datagram: zero or more records (none:
    a keepalive), then optional end marker and padding."""

    name = "camex v2 records"
    fields_desc = [
        PacketListField("records", [], next_cls_cb=_next_record, max_count=MAX_ITEMS),
        StrField("padding", b""),
    ]

    def packets(self) -> list:
        """The inner packets (Scapy packets: IP, IPv6 or Raw)."""
        return [r.payload for r in self.records]

    def mysummary(self):
        if not self.records:
            return "camex v2 keepalive"
        return " ; ".join(r.payload.summary() for r in self.records)


def _inner(p):
    if isinstance(p, (bytes, bytearray, memoryview)):
        data = bytes(p)
        return inner_class(data)(data)
    return p


def records(packets: Iterable) -> CamexV2Records:
    """Records layer holding the given inner packets (Scapy packets or bytes)."""
    return CamexV2Records(records=[CamexV2Record() / _inner(p) for p in packets])


# ------------------------------------------------------------ BULK records


class CamexV2BulkRecord(_RecordBase):
    """One record of a BULK frame: u16be length, u16be gso_size, then the
    inner IPv4 packet (gso_size 0: a complete packet; > 0: a TSO
    super-packet cut into segments of gso_size payload bytes by the
    receiver's kernel)."""

    name = "camex v2 BULK record"
    fields_desc = [ShortField("length", None), ShortField("gso_size", 0)]

    def mysummary(self):
        tso = f" TSO gso_size={self.gso_size}" if self.gso_size else ""
        return f"BULK record {self.length}{tso}"


def _next_bulk_record(pkt, lst, cur, remain):
    # A record needs its four header bytes; a zero length ends the list.
    if len(remain) >= 4 and (remain[0] or remain[1]):
        return CamexV2BulkRecord
    return None


class CamexV2BulkRecords(Packet):
    """The decrypted content of a BULK frame: records, then optional end
    marker and padding."""

    name = "camex v2 BULK records"
    fields_desc = [
        PacketListField("records", [], next_cls_cb=_next_bulk_record,
                        max_count=MAX_ITEMS),
        StrField("padding", b""),
    ]

    def packets(self) -> list:
        """(gso_size, inner packet as a Scapy packet) per record."""
        return [(r.gso_size, r.payload) for r in self.records]

    def mysummary(self):
        if not self.records:
            return "camex v2 BULK frame without records"
        return " ; ".join(r.payload.summary() + (f" [TSO gso_size={r.gso_size}]"
                                                 if r.gso_size else "")
                          for r in self.records)


def bulk_records(items: Iterable) -> CamexV2BulkRecords:
    """BULK records layer of `items`: (gso_size, packet) pairs or bare
    packets (gso_size 0); packets are Scapy packets or bytes."""
    out = []
    for item in items:
        g, p = item if isinstance(item, tuple) else (0, item)
        out.append(CamexV2BulkRecord(gso_size=g) / _inner(p))
    return CamexV2BulkRecords(records=out)


# ------------------------------------------------------------ handshake TLVs

TLV_NAMES = {wire.TLV_MODE: "MODE", wire.TLV_LOCAL_CIDR: "LOCAL_CIDR",
             wire.TLV_GATEWAY: "GATEWAY_IP", wire.TLV_ROUTE: "ROUTE_CIDR",
             wire.TLV_MTU: "MTU", wire.TLV_ERROR: "ERROR",
             wire.TLV_FEATURES: "FEATURES", wire.TLV_VERSION: "VERSION",
             wire.TLV_LOCAL_CIDR6: "LOCAL_CIDR6", wire.TLV_GATEWAY6: "GATEWAY_IP6",
             wire.TLV_ROUTE6: "ROUTE_CIDR6"}
ERROR_NAMES = {wire.ERR_UNKNOWN_CLIENT: "unknown client", wire.ERR_ADDRESS: "address",
               wire.ERR_CONFIG: "no profile", wire.ERR_REQUEST: "malformed request"}
# TLV_FEATURES bits, bit 0 first (FEATURE_BULK = 0x01: "accepts BULK";
# FEATURE_AES256GCM = 0x02: "my data keys may run AES-256-GCM").
FEATURE_NAMES = list(wire.FEATURE_NAMES.values())


class _TlvBase(Packet):
    """type u8, length u8 (filled in when None), then the value fields."""

    def post_build(self, p, pay):
        if self.length is None:
            p = p[:1] + bytes((min(len(p) - 2, 255),)) + p[2:]
        return p + pay

    def extract_padding(self, s):
        return b"", s  # the rest is the next TLV's

    def mysummary(self):
        return self.sprintf("%type%")


class CamexV2Tlv(_TlvBase):
    """A TLV of an unknown type, or a known one whose length is not the
    one its type has (shown raw, as the daemon would skip or refuse it)."""

    name = "camex v2 TLV"
    fields_desc = [
        ByteEnumField("type", 0, TLV_NAMES),
        FieldLenField("length", None, length_of="value", fmt="B"),
        # a length past the end takes what is there: the item is truncated
        StrLenField("value", b"", length_from=lambda p: p.length),
    ]

    def post_build(self, p, pay):
        return p + pay  # FieldLenField already fills in the length

    def mysummary(self):
        return self.sprintf("%type% ") + f"({len(self.value)} bytes)"

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        if _pkt is not None and len(_pkt) >= 2:
            known = TLV_CLASSES.get(_pkt[0])
            if known is not None and known.fits(_pkt[1], len(_pkt) - 2):
                return known
        return cls


def _head(tlv_type):
    """type and length, the first two bytes of every TLV."""
    return [ByteEnumField("type", tlv_type, TLV_NAMES), ByteField("length", None)]


def _fixed(n):
    return classmethod(lambda cls, length, avail: length == n <= avail)


class CamexV2TlvMode(_TlvBase):
    name = "camex v2 TLV MODE"
    fields_desc = _head(wire.TLV_MODE) + [ByteEnumField("mode", 0, {0: "manual", 1: "auto"})]
    fits = _fixed(1)

    def mysummary(self):
        return self.sprintf("MODE %mode%")


class CamexV2TlvLocalCidr(_TlvBase):
    name = "camex v2 TLV LOCAL_CIDR"
    fields_desc = _head(wire.TLV_LOCAL_CIDR) + [IPField("address", "0.0.0.0"),
                                                  ByteField("prefix", 32)]
    fits = _fixed(5)

    def mysummary(self):
        return f"LOCAL_CIDR {self.address}/{self.prefix}"


class CamexV2TlvGateway(_TlvBase):
    name = "camex v2 TLV GATEWAY_IP"
    fields_desc = _head(wire.TLV_GATEWAY) + [IPField("address", "0.0.0.0")]
    fits = _fixed(4)

    def mysummary(self):
        return f"GATEWAY_IP {self.address}"


class CamexV2TlvRoute(_TlvBase):
    name = "camex v2 TLV ROUTE_CIDR"
    fields_desc = _head(wire.TLV_ROUTE) + [IPField("network", "0.0.0.0"),
                                             ByteField("prefix", 0)]
    fits = _fixed(5)

    def mysummary(self):
        return f"ROUTE_CIDR {self.network}/{self.prefix}"


class CamexV2TlvMtu(_TlvBase):
    name = "camex v2 TLV MTU"
    fields_desc = _head(wire.TLV_MTU) + [ShortField("mtu", 1438)]
    fits = _fixed(2)

    def mysummary(self):
        return f"MTU {self.mtu}"


class CamexV2TlvError(_TlvBase):
    name = "camex v2 TLV ERROR"
    fields_desc = _head(wire.TLV_ERROR) + [
        ByteEnumField("code", 0, ERROR_NAMES),
        StrLenField("text", b"", length_from=lambda p: (p.length or 1) - 1)]
    fits = classmethod(lambda cls, length, avail: 1 <= length <= avail)

    def mysummary(self):
        return self.sprintf("ERROR %code%: ") + bytes(self.text).decode("utf-8", "replace")


class CamexV2TlvFeatures(_TlvBase):
    """FEATURES (INIT and RESP): what the sender accepts; bit 0 BULK. One
    byte today; a longer value (a later version's) keeps its first byte
    as the bitmask, as the daemon reads it, and shows the rest as `more`."""

    name = "camex v2 TLV FEATURES"
    fields_desc = _head(wire.TLV_FEATURES) + [
        FlagsField("features", 0, 8, FEATURE_NAMES),
        StrLenField("more", b"", length_from=lambda p: (p.length or 1) - 1)]
    fits = classmethod(lambda cls, length, avail: 1 <= length <= avail)

    def mysummary(self):
        return self.sprintf("FEATURES [%features%]")


class CamexV2TlvVersion(_TlvBase):
    """VERSION (INIT and RESP, payload 2 on): the sender's payload version;
    absent in a version-1 payload. A longer value keeps its first byte."""

    name = "camex v2 TLV VERSION"
    fields_desc = _head(wire.TLV_VERSION) + [
        ByteField("version", wire.PAYLOAD_VERSION),
        StrLenField("more", b"", length_from=lambda p: (p.length or 1) - 1)]
    fits = classmethod(lambda cls, length, avail: 1 <= length <= avail)

    def mysummary(self):
        return f"VERSION {self.version}"


class CamexV2TlvLocalCidr6(_TlvBase):
    name = "camex v2 TLV LOCAL_CIDR6"
    fields_desc = _head(wire.TLV_LOCAL_CIDR6) + [IP6Field("address", "::"),
                                                   ByteField("prefix", 128)]
    fits = _fixed(17)

    def mysummary(self):
        return f"LOCAL_CIDR6 {self.address}/{self.prefix}"


class CamexV2TlvGateway6(_TlvBase):
    name = "camex v2 TLV GATEWAY_IP6"
    fields_desc = _head(wire.TLV_GATEWAY6) + [IP6Field("address", "::")]
    fits = _fixed(16)

    def mysummary(self):
        return f"GATEWAY_IP6 {self.address}"


class CamexV2TlvRoute6(_TlvBase):
    name = "camex v2 TLV ROUTE_CIDR6"
    fields_desc = _head(wire.TLV_ROUTE6) + [IP6Field("network", "::"),
                                              ByteField("prefix", 0)]
    fits = _fixed(17)

    def mysummary(self):
        return f"ROUTE_CIDR6 {self.network}/{self.prefix}"


TLV_CLASSES = {wire.TLV_MODE: CamexV2TlvMode, wire.TLV_LOCAL_CIDR: CamexV2TlvLocalCidr,
               wire.TLV_GATEWAY: CamexV2TlvGateway, wire.TLV_ROUTE: CamexV2TlvRoute,
               wire.TLV_MTU: CamexV2TlvMtu, wire.TLV_ERROR: CamexV2TlvError,
               wire.TLV_FEATURES: CamexV2TlvFeatures, wire.TLV_VERSION: CamexV2TlvVersion,
               wire.TLV_LOCAL_CIDR6: CamexV2TlvLocalCidr6,
               wire.TLV_GATEWAY6: CamexV2TlvGateway6, wire.TLV_ROUTE6: CamexV2TlvRoute6}


def _next_tlv(pkt, lst, cur, remain):
    # An item needs its type and length bytes; a lone byte is left over.
    return CamexV2Tlv if len(remain) >= 2 else None


class CamexV2Payload(Packet):
    """A handshake payload: the INIT's request or the RESP's configuration
    (after the server's index), as a list of TLVs."""

    name = "camex v2 handshake payload"
    fields_desc = [PacketListField("tlvs", [], next_cls_cb=_next_tlv, max_count=MAX_ITEMS),
                   StrField("stray", b"")]  # a byte after the last item: malformed

    def get(self, tlv_type: int) -> list:
        """The items of one type, in order."""
        return [t for t in self.tlvs if t.type == tlv_type]

    def features(self) -> int | None:
        """The FEATURES bitmask (the last item's, as the daemon reads it),
        None without one (a peer from before BULK)."""
        items = [t for t in self.tlvs if isinstance(t, CamexV2TlvFeatures)]
        return int(items[-1].features) if items else None

    def version(self) -> int:
        """The payload version (the last VERSION item's, as the daemon
        reads it); 1 without one."""
        items = [t for t in self.tlvs if isinstance(t, CamexV2TlvVersion)]
        return max(int(items[-1].version), wire.PAYLOAD_V1) if items else wire.PAYLOAD_V1

    def mysummary(self):
        return " ".join(t.summary() for t in self.tlvs) or "empty payload"


def payload(*tlvs) -> CamexV2Payload:
    return CamexV2Payload(tlvs=list(tlvs))


__all__ = ["CamexV2Record", "CamexV2Records", "records", "CamexV2BulkRecord",
           "CamexV2BulkRecords", "bulk_records", "CamexV2Tlv", "CamexV2TlvMode",
           "CamexV2TlvLocalCidr", "CamexV2TlvGateway", "CamexV2TlvRoute", "CamexV2TlvMtu",
           "CamexV2TlvError", "CamexV2TlvFeatures", "CamexV2TlvVersion",
           "CamexV2TlvLocalCidr6", "CamexV2TlvGateway6", "CamexV2TlvRoute6",
           "CamexV2Payload", "payload",
           "TLV_CLASSES", "TLV_NAMES", "FEATURE_NAMES"]
