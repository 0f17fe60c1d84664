"""`camex --keylog FILE` (camex/daemon/keylog.py): the file the daemons write is
private, announced loudly, and what camex-dissect --keylog reads."""

import json
import logging
import os
import stat

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from camex.dissect import cli as dissect
from camex.daemon.keylog import KeyLogFile
from camex.daemon.loop import StartupError
from camex.daemon.options import parse_args
from camex.v2 import wire
from camex.v2.client import ClientSession
from camex.testing.memlab import MemLab, Profile, ipv4, make_server

PSK = b"p" * 32


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_created_0600_with_a_loud_warning(tmp_path, caplog):
    path = tmp_path / "keys"
    with caplog.at_level(logging.WARNING, logger="camex"):
        log = KeyLogFile(str(path))
    log("CAMEX_V2 00000001 " + "ab" * 32)
    log.close()
    assert mode(path) == 0o600
    assert path.read_text() == "CAMEX_V2 00000001 " + "ab" * 32 + "\n"
    assert any("SESSION KEYS ARE WRITTEN" in r.getMessage() and "anyone who can read it"
               in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_existing_file_is_appended_and_made_private(tmp_path, caplog):
    path = tmp_path / "keys"
    path.write_text("# earlier run\n")
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="camex"):
        log = KeyLogFile(str(path))
    log("CAMEX_V2 00000002 " + "cd" * 32)
    log.close()
    assert mode(path) == 0o600
    assert path.read_text().splitlines() == ["# earlier run", "CAMEX_V2 00000002 " + "cd" * 32]
    assert any("now mode 0600" in r.getMessage() for r in caplog.records)


def test_unwritable_path_is_a_startup_error(tmp_path):
    with pytest.raises(StartupError, match=r"^--keylog: .*/nodir/keys: No such file"):
        KeyLogFile(str(tmp_path / "nodir" / "keys"))


def test_daemons_open_the_keylog(tmp_path):
    """Both roles create the file at start (before any session)."""
    from camex.daemon.client import ClientDaemon
    from camex.daemon.server import ServerDaemon
    c, s = tmp_path / "client.keys", tmp_path / "server.keys"
    client = ClientDaemon(parse_args(["-M", "client", "-s", "10.250.0.1", "-p", "7000",
                                      "-l", "10.0.0.2/24", "-e", "-k", "lab-pass",
                                      "--keylog", str(c)], environ={}))
    server = ServerDaemon(parse_args(["-M", "server", "-p", "7000", "-e", "-k", "lab-pass",
                                      "--keylog", str(s)], environ={}), lambda: None)
    assert mode(c) == mode(s) == 0o600
    assert client.keylog.path == str(c) and server.keylog.path == str(s)


def test_legacy_only_server_opens_no_keylog(tmp_path):
    from camex.daemon.server import ServerDaemon
    s = tmp_path / "server.keys"
    server = ServerDaemon(parse_args(["-M", "server", "-p", "7000", "--protocol", "legacy",
                                      "--keylog", str(s)], environ={}), lambda: None)
    assert server.keylog is None and not s.exists()


def test_one_file_shared_by_client_and_server_decrypts_everything(tmp_path, capsys):
    """The v2 cores write through KeyLogFile into one file; camex-dissect
    --keylog with that file opens every DATA of the conversation."""
    path = tmp_path / "shared.keys"
    srv_log, cli_log = KeyLogFile(str(path)), KeyLogFile(str(path))
    srv = make_server(global_psk=PSK, profiles={"cam9": Profile("10.0.0.9/24", "10.0.0.1")},
                      keylog=srv_log)
    lab = MemLab(srv)
    lab.add("c", ClientSession([PSK], "cam9", wire.Request(auto=True), keylog=cli_log),
            ("192.0.2.9", 41000))
    lab.start("c")
    lab.run(1.0)
    for i in range(5):
        lab.send_from("c", [ipv4("10.0.0.9", "10.0.0.1", b"req%d" % i)])
        lab.send_to("c", [ipv4("10.0.0.1", "10.0.0.9", b"rep%d" % i)])
    srv_log.close()
    cli_log.close()
    assert srv_log.lines == cli_log.lines == 2
    frames = []
    for t, direction, _n, data in lab.log:
        a, b = (("192.0.2.9", 41000), ("192.0.2.1", 7000))[::1 if direction == "c2s" else -1]
        p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / \
            IP(src=a[0], dst=b[0]) / UDP(sport=a[1], dport=b[1]) / data
        p.time = t
        frames.append(p)
    wrpcap(str(tmp_path / "c.pcap"), frames)
    assert dissect.main([str(tmp_path / "c.pcap"), "--keylog", str(path), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    data = [r for r in lines[:-1] if r["type"] == "DATA"]
    assert data and all(r["status"] == "ok" for r in data)
    inner = [s for r in data for s in r["packets"]]
    assert len(inner) == 10 and sum("10.0.0.9 > 10.0.0.1" in s for s in inner) == 5
