"""Property-based fuzzing of the Scapy layers: any bytes must dissect without
raising, CX2P layers must rebuild the exact bytes, and what the layers read
must agree with the codec whenever the codec accepts the input. Scapy's own
fuzz() of every layer must build and dissect back too."""

import os

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scapy.config import conf
from scapy.layers.inet import IP, UDP
from scapy.packet import fuzz

from camex import proto
from camex.legacy import codec
from camex.proto import (CX2PControl, CX2PControlBody, CX2PData, CX2PEncrypted,
                         CX2PSealed)
from camex.proto.legacy import SEALED_CLASSES
from camex.v2 import wire

N = int(os.environ.get("CAMEX_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow])

payloads = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=80).map(lambda b: b"CX2P" + b),
    st.binary(max_size=80).map(lambda b: b"CX2P " + b),
    st.text(alphabet=" =\nAB1", max_size=40).map(lambda t: b"CX2P " + t.encode()),
    st.binary(max_size=80).map(lambda b: b"\x45" + b),
    st.binary(max_size=80).map(lambda b: b"\x60" + b),
    # camex v2: any type byte after the mark, BULK fragments most of all
    st.binary(max_size=80).map(lambda b: b"\xc2" + b),
    st.binary(min_size=6, max_size=120).map(lambda b: b"\xc2\x06" + b),
)


def on_wire(payload, sport=40000, dport=7000):
    return bytes(IP(src="10.250.0.2", dst="10.250.0.1") / UDP(sport=sport, dport=dport) / payload)


@FUZZ
@given(payloads, st.sampled_from([(40000, 7000), (7000, 40000), (40000, 5555)]))
@example(b"CX2P ", (40000, 7000))
@example(b"CX2P \n\n\n", (40000, 7000))
@example(b"CX2P\x02", (40000, 7000))
def test_any_udp_payload_dissects_without_error(payload, ports):
    # As sniff()/rdpcap() dissect (conf.debug_dissector off). A layer that
    # raised would be replaced by Raw, which the class checks below catch.
    pkt = IP(on_wire(payload, *ports))
    pkt.summary()
    pkt.show(dump=True)
    udp_payload = pkt[UDP].payload
    assert bytes(udp_payload) == payload
    if payload[:4] == b"CX2P" and ports[1] == 7000:
        assert isinstance(udp_payload, (CX2PControl, CX2PEncrypted, proto.CX2PMalformed))
        # no layer failed and fell back to Raw: the CX2P layers take every byte
        assert not udp_payload.haslayer(conf.raw_layer)
    if isinstance(udp_payload, (CX2PControl, CX2PEncrypted, CX2PData, proto.CX2PMalformed)):
        if not isinstance(udp_payload, CX2PData):
            assert bytes(udp_payload) == payload
    if wire.is_v2(payload):   # on any port, the v2 layers rebuild every byte
        assert isinstance(udp_payload, proto.CamexV2) and bytes(udp_payload) == payload
        if payload[1] == wire.T_BULK and len(payload) >= wire.HEADER_BULK:
            # a whole BULK header: the layer reads it, the rest is the slice
            assert udp_payload.haslayer(proto.CamexV2Bulk)
            assert not udp_payload.haslayer(conf.raw_layer)
            assert bytes(udp_payload[proto.CamexV2Bulk].slice) == payload[wire.HEADER_BULK:]


@FUZZ
@given(payloads)
def test_control_layer_agrees_with_codec(payload):
    if not payload.startswith(b"CX2P "):
        return
    pkt = CX2PControl(payload)
    assert bytes(pkt) == payload
    try:
        c = codec.parse_control(payload)
    except codec.CodecError:
        return
    assert pkt.verb.decode() == c.verb
    body = pkt.payload
    if not body:  # nothing after the verb: no fields
        assert not c.fields and not c.bare
        return
    assert isinstance(body, CX2PControlBody)
    assert body.pairs() == list(c.fields)
    assert [p.key.decode() for p in body.params if not p.eq and p.key] == list(c.bare)


@FUZZ
@given(st.one_of(payloads, st.binary(min_size=43, max_size=200).map(
    lambda b: b"CX2P" + bytes([b[0] % 4]) + b[1:])))
def test_encrypted_layer_agrees_with_codec(payload):
    if len(payload) < codec.HEADER_LEN:
        return  # the classifier gives shorter ones to CX2PMalformed
    pkt = CX2PEncrypted(payload)
    assert bytes(pkt) == payload
    try:
        h = codec.parse_header(payload)
    except codec.CodecError:
        return
    assert (pkt.type, bytes(pkt.prefix), pkt.seq, pkt.length) == (h.type, h.prefix, h.seq, h.length)
    sealed = pkt.payload
    assert type(sealed) is SEALED_CLASSES[h.type]
    assert len(sealed.ciphertext) == h.length and len(sealed.tag) == 16
    try:
        proto.decrypt(pkt, "fuzz")
    except proto.NoKeyError:
        pass


@FUZZ
@given(st.sampled_from([(CX2PEncrypted, CX2PSealed), (CX2PEncrypted, SEALED_CLASSES[2]),
                        (CX2PControl,), (CX2PControl, proto.CX2PRegister),
                        (CX2PControl, proto.CX2PConfig), (proto.CX2PParam,)]),
       st.integers(0, 2**32))
def test_scapy_fuzz_of_each_layer_builds_and_dissects(stack, seed):
    import random
    random.seed(seed)  # Scapy's fuzz() draws from the random module
    template = stack[0]()
    for cls in stack[1:]:
        template = template / cls()
    raw = bytes(fuzz(template))
    again = type(template)(raw)
    again.summary()
    assert bytes(again) == raw
    IP(on_wire(raw)).summary()


@FUZZ
@given(st.binary(min_size=1, max_size=63), st.binary(min_size=4, max_size=4),
       st.integers(0, 2**64 - 1), st.binary(max_size=300))
def test_seal_and_decrypt_layers_round_trip(passphrase, prefix, seq, data):
    pkt = proto.seal(data, passphrase, prefix, seq, ptype=codec.T_DATA)
    wire = IP(on_wire(bytes(pkt), 40000, 12345))  # content detection, not port
    assert wire.haslayer(CX2PEncrypted)
    inner = proto.decrypt(wire, [b"x", passphrase])
    assert bytes(inner) == data


def test_regression_control_line_of_more_than_100_params():
    """Scapy caps a list at 100 items by raising; a control line of 120
    tokens is parsed by the codec, so the layer must take it too."""
    line = b"CX2P REGISTER" + b" A=1" * 120 + b"\n"
    pkt = CX2PControl(line)
    assert bytes(pkt) == line and len(pkt.payload.params) == 120
    assert len(codec.parse_control(line).fields) == 120
