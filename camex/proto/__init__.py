"""Scapy layers for the camex tunnel protocols.

    from camex import proto          # binds the layers into Scapy
    from scapy.all import rdpcap
    pkts = rdpcap("capture.pcap")    # UDP payloads now dissect as CX2P...
    proto.set_ports([7000, 7001])    # ports where plaintext DATA is expected

Inside Scapy's shell (with camex installed): `load_contrib("camex")` after
`conf.exts.load("camex")`, or simply `from camex import proto`.

One module per protocol version (legacy.py, v2.py). Each registers a
classifier with registry.py, which hooks Scapy's UDP dissection once. To add
a version: write camex/proto/<name>.py with layers and a `register()`
function, and list it in VERSIONS below.

This package (and camex.dissect.cli) are the only parts of camex that import
Scapy; the daemon's data path never does.
"""

from __future__ import annotations

import importlib

from camex.proto import registry
from camex.proto.legacy import (CX2PConfig, CX2PControl, CX2PControlBody,
                                CX2PData, CX2PEncrypted, CX2PMalformed, CX2PParam,
                                CX2PRegister, CX2PSealed, CX2PSealedConfig,
                                CX2PSealedData, CX2PSealedRegister, params)
from camex.proto.crypto import KeyRing, LegacyKey, NoKeyError, decrypt, seal
from camex.proto.registry import classify, get_ports, set_ports
from camex.proto.v2 import (CamexV2, CamexV2Bulk, CamexV2BulkRecord, CamexV2BulkRecords,
                            CamexV2Cookie, CamexV2Data, CamexV2Init, CamexV2NoSession,
                            CamexV2Payload, CamexV2Record, CamexV2Records, CamexV2Resp,
                            KeyLog)

# Protocol-version modules; each has register(). Optional ones may be absent.
VERSIONS = ("camex.proto.legacy", "camex.proto.v2")
loaded_versions: list[str] = []


def _register_all() -> None:
    registry.install_udp_hook()
    for name in VERSIONS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that version is not written yet
                continue
            raise
        register = getattr(mod, "register", None)
        if register is not None:
            register()
            loaded_versions.append(name.rsplit(".", 1)[1])


_register_all()


def scapy_ext(plg) -> None:
    """Scapy extension hook (conf.exts.load("camex") calls camex.scapy_ext)."""
    import pathlib

    from scapy.config import ScapyExt

    plg.config("camex", __import__("camex").__version__)
    plg.register(name="camex", mode=ScapyExt.MODE.CONTRIB,
                 path=pathlib.Path(__file__).with_name("contrib.py"))


__all__ = [
    "CX2PConfig", "CX2PControl", "CX2PControlBody", "CX2PData", "CX2PEncrypted", "CX2PMalformed",
    "CX2PParam", "CX2PRegister", "CX2PSealed", "CX2PSealedConfig",
    "CX2PSealedData", "CX2PSealedRegister", "KeyRing", "LegacyKey",
    "NoKeyError", "classify", "decrypt", "get_ports", "params", "seal",
    "set_ports", "scapy_ext", "loaded_versions",
    "CamexV2", "CamexV2Cookie", "CamexV2Data", "CamexV2Init", "CamexV2NoSession",
    "CamexV2Record", "CamexV2Records", "CamexV2Resp", "KeyLog",
    "CamexV2Bulk", "CamexV2BulkRecord", "CamexV2BulkRecords", "CamexV2Payload",
]
