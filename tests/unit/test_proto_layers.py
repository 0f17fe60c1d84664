"""Scapy layers of the legacy protocol: building, dissection by content and
by port, the port setting, summaries, and Scapy's extension loading."""

import subprocess
import sys

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from camex import proto
from camex.legacy import codec
from camex.proto import (CX2PConfig, CX2PControl, CX2PData, CX2PEncrypted,
                         CX2PRegister, CX2PSealedData)

INNER = IP(src="10.0.0.2", dst="10.0.0.3") / ICMP(id=7, seq=1) / b"hello"


@pytest.fixture
def ports():
    saved = proto.get_ports()
    yield
    proto.set_ports(saved)


def outer(payload, sport=40000, dport=7000):
    """Bytes on the wire, re-dissected as Scapy would see them from sniff()."""
    return IP(bytes(IP(src="10.250.0.2", dst="10.250.0.1") / UDP(sport=sport, dport=dport) / payload))


def test_register_built_from_layers_is_the_codec_message():
    pkt = CX2PControl() / CX2PRegister(params=proto.params(("MODE", "AUTO"), ("CLIENT_ID", "C1")))
    assert bytes(pkt) == codec.register_auto("C1")
    assert pkt.summary().endswith("CX2P REGISTER MODE=AUTO CLIENT_ID=C1")


def test_config_built_from_layers_is_the_codec_message():
    pkt = CX2PControl() / CX2PConfig(params=proto.params(
        ("CLIENT_ID", "C1"), ("MTU", 1500), ("LOCAL_CIDR", "10.0.0.2/24"),
        ("GATEWAY_IP", "10.0.0.1"), ("ROUTE_CIDR", "10.251.0.0/24")))
    assert bytes(pkt) == codec.config_message("C1", 1500, "10.0.0.2/24", "10.0.0.1",
                                              ["10.251.0.0/24"])
    assert pkt[CX2PConfig].get("MTU") == "1500"
    assert pkt[CX2PConfig].get_all("ROUTE_CIDR") == ["10.251.0.0/24"]


def test_encrypted_header_lengths_filled_by_post_build():
    sealed = proto.seal(INNER, "demo-global-secret", b"\x01\x02\x03\x04", 5)
    rebuilt = CX2PEncrypted(type=2, prefix=b"\x01\x02\x03\x04", seq=5) / \
        CX2PSealedData(ciphertext=sealed.ciphertext, tag=sealed.tag)
    raw = bytes(rebuilt)
    assert raw == bytes(sealed)
    hdr = codec.parse_header(raw)
    assert (hdr.type, hdr.seq, hdr.length) == (2, 5, len(INNER))
    assert len(raw) == len(INNER) + 43


def test_seal_picks_type_from_inner_layer():
    reg = CX2PControl(codec.register_manual("10.0.0.2"))
    assert proto.seal(reg, "k", seq=0).type == codec.T_REGISTER
    cfg = CX2PControl(codec.config_message("C1", 1500, "10.0.0.2/24", "10.0.0.1"))
    assert proto.seal(cfg, "k", seq=0).type == codec.T_CONFIG
    assert proto.seal(INNER, "k", seq=0).type == codec.T_DATA


def test_encrypted_dissected_by_content_on_any_port(ports):
    proto.set_ports([7000])
    wire = bytes(proto.seal(INNER, "pw", b"abcd", 9))
    pkt = outer(wire, 51000, 5555)
    assert pkt.haslayer(CX2PEncrypted) and pkt[CX2PEncrypted].seq == 9
    assert isinstance(pkt[CX2PEncrypted].payload, CX2PSealedData)
    inner = proto.decrypt(pkt, ["wrong", "pw"])
    assert inner[ICMP].id == 7 and bytes(inner) == bytes(INNER)


def test_control_dissected_by_content_on_any_port():
    pkt = outer(codec.register_manual("10.0.0.2"), 51000, 5555)
    assert pkt[CX2PRegister].get("LOCAL_IP") == "10.0.0.2"


def test_plain_data_needs_the_port(ports):
    proto.set_ports([7000])
    assert outer(bytes(INNER), 40000, 7000).haslayer(CX2PData)
    assert outer(bytes(INNER), 7000, 40000)[CX2PData][ICMP].seq == 1
    off = outer(bytes(INNER), 40000, 7001)
    assert not off.haslayer(CX2PData)
    proto.set_ports([7001, 9000])
    on = outer(bytes(INNER), 40000, 7001)
    assert on.haslayer(CX2PData) and on[CX2PData].payload.haslayer(ICMP)
    assert not outer(bytes(INNER), 40000, 7000).haslayer(CX2PData)


def test_plain_ipv6_data_on_port():
    v6 = IPv6(src="fe80::1", dst="ff02::2") / b"x"
    pkt = outer(bytes(v6))
    assert pkt[CX2PData].payload.__class__ is IPv6


def test_bad_port_setting_rejected(ports):
    with pytest.raises(ValueError):
        proto.set_ports([0])
    with pytest.raises(ValueError):
        proto.set_ports([70000])


def test_random_udp_starting_with_magic_off_port_is_not_camex(ports):
    proto.set_ports([7000])
    pkt = outer(b"CX2P\x09" + b"z" * 40, 1234, 5678)  # unknown type: not ours
    assert not pkt.haslayer(CX2PEncrypted)
    assert pkt.haslayer(Raw)


def test_control_odd_spacing_round_trips():
    raw = b"CX2P  REGISTER   MODE=AUTO  CLIENT_ID=C1 \n"
    pkt = CX2PControl(raw)
    assert bytes(pkt) == raw
    assert pkt[CX2PRegister].get("CLIENT_ID") == "C1"
    assert codec.parse_control(raw).get("CLIENT_ID") == "C1"


def test_unknown_verb_uses_generic_body():
    pkt = CX2PControl(b"CX2P HELLO A=1\n")
    assert type(pkt.payload) is proto.CX2PControlBody
    assert pkt.payload.get("A") == "1"


def test_sniffed_bytes_show_and_summary_do_not_fail():
    wire = bytes(proto.seal(INNER, "pw", b"abcd", 1))
    pkt = outer(wire)
    text = pkt.show(dump=True)
    assert "CX2P encrypted" in text and "prefix" in text
    assert "CX2P DATA seq=1" in pkt.summary()


def test_build_stack_sets_reference_port():
    pkt = IP(bytes(IP() / UDP(sport=40000) / CX2PEncrypted(seq=1) / CX2PSealedData()))
    assert pkt[UDP].dport == 7000


def test_layers_registered_through_scapy_extension_mechanism():
    """`conf.exts.load("camex")` + `load_contrib("camex")` in a fresh interpreter."""
    code = (
        "from scapy.all import conf, load_contrib, IP, UDP\n"
        "conf.exts.load('camex')\n"
        "load_contrib('camex')\n"
        "import scapy.contrib.camex as m\n"
        "p = IP(bytes(IP()/UDP(sport=1,dport=7000)/b'CX2P REGISTER MODE=AUTO CLIENT_ID=Z\\n'))\n"
        "print(p[m.CX2PRegister].get('CLIENT_ID'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Z"


def test_library_does_not_star_import_scapy_all():
    import pathlib
    root = pathlib.Path(proto.__file__).parent
    for f in list(root.glob("*.py")) + [root.parent / "dissect.py", root.parent / "capture.py"]:
        if f.exists():
            assert "from scapy.all import *" not in f.read_text(), f


def test_sniff_dissects_captures(tmp_path):
    """Scapy's sniff() (here on a capture file) yields CX2P layers, port or not."""
    from scapy.sendrecv import sniff
    from scapy.utils import wrpcap
    pkts = [IP(src="10.250.0.2", dst="10.250.0.1") / UDP(sport=40000, dport=7000) /
            proto.seal(INNER, "pw", b"abcd", 1),
            IP(src="10.250.0.2", dst="10.250.0.1") / UDP(sport=40000, dport=7000) / bytes(INNER),
            IP(src="10.250.0.2", dst="10.250.0.1") / UDP(sport=40000, dport=4242) /
            codec.register_auto("C9")]
    path = tmp_path / "s.pcap"
    wrpcap(str(path), pkts)
    got = sniff(offline=str(path))
    assert got[0].haslayer(CX2PSealedData) and got[0][CX2PEncrypted].seq == 1
    assert got[1][CX2PData].haslayer(ICMP)
    assert got[2][CX2PRegister].get("CLIENT_ID") == "C9"
