"""`camex status --prometheus`: the daemons' status answers rendered in the
Prometheus text format, read back with prometheus_client's own parser (what
a scraper sees), and the command's behaviour around it (a daemon that does
not answer, the atomic --output file)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

from camex.daemon import metrics

NOW = 1_765_000_000.0

# Shaped as ServerDaemon.status() and ClientDaemon.status() answer (the lab
# test test_ops_metrics.py checks the same against running daemons).
SERVER = {
    "mode": "server", "port": 7000, "encrypted": True, "protocols": ["v2", "legacy"],
    "v2_cookies_sent": 3, "v2_handshakes": 12,
    "drops": {"auth": 5, "v2-replay": 2, "legacy-refused": 0},
    "process": {"pid": 42, "rss_kib": 24_000, "peak_rss_kib": 31_000, "helpers": {}},
    "clients": [
        {"client_id": "C1", "address": "10.0.0.2", "endpoint": "10.250.0.2:40000",
         "protocol": "legacy", "mode": "auto", "key": "global", "registered_ago": 100.0,
         "last_register_ago": 4.5, "last_received_ago": 0.25, "rx_packets": 10,
         "rx_bytes": 10_280, "tx_packets": 11, "tx_bytes": 11_308},
        # A C client may send any printable ID, quotes and backslashes included.
        {"client_id": 'cam"7\\x', "address": "10.0.0.3", "endpoint": "10.250.1.2:40001",
         "protocol": "v2", "mode": "manual", "key": "global", "session_age": 30.0,
         "registered_ago": 30.0, "last_received_ago": 1.0, "rx_packets": 5, "rx_bytes": 2**40,
         "tx_packets": 6, "tx_bytes": 600, "spoofed": 0, "bulk": True,
         "bulk_rx_frames": 0, "bulk_tx_frames": 0},
        {"client_id": None, "address": "10.0.0.4", "endpoint": "10.250.2.2:40002",
         "protocol": "v2", "mode": "manual", "key": "C4", "session_age": None,
         "registered_ago": None, "last_received_ago": None, "rx_packets": 0, "rx_bytes": 0,
         "tx_packets": 0, "tx_bytes": 0},
    ],
}
CLIENT = {
    "mode": "client", "protocol": "v2", "encrypted": True, "client_id": "hall",
    "interface": "tun0", "address": "10.0.0.2/24", "mtu": 1438,
    "server": "10.250.0.1:7000", "local_port": 40000, "last_received_ago": 2.0,
    "last_register_ago": 50.0, "last_handshake_ago": 49.5, "handshakes": 2,
    "tx_packets": 7, "tx_bytes": 700, "rx_packets": 8, "rx_bytes": 800,
    "bulk_tx_frames": 0, "bulk_rx_frames": 0, "drops": {"v2-replay": 1},
    "process": {"pid": 43, "rss_kib": 20_000, "peak_rss_kib": 22_000, "helpers": {}},
}
RESULTS = {"/run/camex/server-7000.sock": SERVER, "/run/camex/client-7000.sock": CLIENT,
           "/tmp/lab/other.sock": None}


def parsed(text):
    """{sample name: {frozenset(labels): value}} and the families, as
    prometheus_client reads them."""
    families = list(text_string_to_metric_families(text))
    samples = {}
    for fam in families:
        for s in fam.samples:
            samples.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return families, samples


def value(samples, name, **labels):
    matches = [v for k, v in samples[name].items() if set(labels.items()) <= k]
    assert len(matches) == 1, (name, labels, samples.get(name))
    return matches[0]


def test_a_scraper_reads_every_family_once_with_help_and_type():
    text = metrics.render(RESULTS, NOW)
    print("\n" + text)
    families, samples = parsed(text)
    names = [f.name for f in families]
    assert len(names) == len(set(names))
    for fam in families:
        assert fam.name.startswith("camex_") and fam.documentation
        # One set of label names per family, as client libraries require.
        assert len({frozenset(s.labels) for s in fam.samples}) == 1, fam.name
        if fam.type == "counter":
            assert all(s.name == fam.name + "_total" for s in fam.samples)
    kinds = {f.name: f.type for f in families}
    assert kinds["camex_received_bytes"] == "counter"
    assert kinds["camex_drops"] == "counter"
    assert kinds["camex_last_handshake_timestamp_seconds"] == "gauge"
    assert kinds["camex_process_resident_memory_bytes"] == "gauge"
    for line in text.splitlines():
        if line.startswith("# TYPE"):
            assert len(re.findall(rf"^{re.escape(line)}$", text, re.M)) == 1


def test_server_clients_traffic_and_times():
    _, s = parsed(metrics.render(RESULTS, NOW))
    d = "server-7000"
    assert value(s, "camex_up", daemon=d) == 1
    assert value(s, "camex_up", daemon="/tmp/lab/other.sock") == 0
    assert value(s, "camex_clients", daemon=d, protocol="v2") == 2
    assert value(s, "camex_clients", daemon=d, protocol="legacy") == 1
    c1 = dict(daemon=d, client="C1", address="10.0.0.2", protocol="legacy")
    assert value(s, "camex_received_bytes_total", **c1) == 10_280
    assert value(s, "camex_sent_bytes_total", **c1) == 11_308
    assert value(s, "camex_received_packets_total", **c1) == 10
    assert value(s, "camex_sent_packets_total", **c1) == 11
    # Legacy: the last REGISTER (not the first); v2: the session in use.
    assert value(s, "camex_last_handshake_timestamp_seconds", **c1) == NOW - 4.5
    assert value(s, "camex_last_received_timestamp_seconds", **c1) == NOW - 0.25
    info = value(s, "camex_client_info", **c1, mode="auto", key="global",
                 endpoint="10.250.0.2:40000")
    assert info == 1
    # A label value with a quote and a backslash comes back exactly.
    cam = dict(daemon=d, client='cam"7\\x', address="10.0.0.3", protocol="v2")
    assert value(s, "camex_received_bytes_total", **cam) == 2**40
    assert value(s, "camex_last_handshake_timestamp_seconds", **cam) == NOW - 30.0
    # A client without an ID or a session: empty label, no timestamp sample.
    anon = dict(daemon=d, client="", address="10.0.0.4", protocol="v2")
    assert value(s, "camex_sent_packets_total", **anon) == 0
    assert frozenset(anon.items()) not in s["camex_last_handshake_timestamp_seconds"]


def test_daemon_counters_and_memory():
    _, s = parsed(metrics.render(RESULTS, NOW))
    d = "server-7000"
    assert value(s, "camex_drops_total", daemon=d, reason="auth") == 5
    assert value(s, "camex_drops_total", daemon=d, reason="v2-replay") == 2
    assert value(s, "camex_handshakes_total", daemon=d) == 12
    assert value(s, "camex_cookies_sent_total", daemon=d) == 3
    assert value(s, "camex_process_resident_memory_bytes", daemon=d) == 24_000 * 1024
    assert value(s, "camex_process_resident_memory_peak_bytes", daemon=d) == 31_000 * 1024
    assert value(s, "camex_daemon_info", daemon=d, role="server", protocols="v2,legacy",
                 encrypted="true") == 1


def test_client_daemon_has_its_own_tunnel_series():
    _, s = parsed(metrics.render(RESULTS, NOW))
    me = dict(daemon="client-7000", client="hall", address="10.0.0.2", protocol="v2")
    assert value(s, "camex_received_bytes_total", **me) == 800
    assert value(s, "camex_sent_bytes_total", **me) == 700
    assert value(s, "camex_last_handshake_timestamp_seconds", **me) == NOW - 49.5
    assert value(s, "camex_handshakes_total", daemon="client-7000") == 2
    assert value(s, "camex_drops_total", daemon="client-7000", reason="v2-replay") == 1
    assert value(s, "camex_daemon_info", daemon="client-7000", role="client") == 1
    # A legacy-only client: the REGISTER it last sent; no handshake counter.
    legacy = dict(CLIENT, protocol="legacy", handshakes=None, last_handshake_ago=None)
    _, s = parsed(metrics.render({"/run/camex/client-7000.sock": legacy}, NOW))
    assert value(s, "camex_last_handshake_timestamp_seconds",
                 daemon="client-7000") == NOW - 50.0
    assert "camex_handshakes_total" not in s


def test_label_escaping_in_the_text():
    assert metrics.escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    text = metrics.render({"/run/camex/server-1.sock": dict(SERVER, clients=[
        dict(SERVER["clients"][0], client_id="x\ny")])}, NOW)
    assert 'client="x\\ny"' in text and "\nx" not in text.replace("\n# ", "")
    _, s = parsed(text)
    assert value(s, "camex_sent_packets_total", client="x\ny") == 11


def test_nothing_running_is_an_empty_exposition():
    assert metrics.render({}, NOW) == ""
    assert list(text_string_to_metric_families(metrics.render({}, NOW))) == []


def _status(*args, umask=0o022):
    return subprocess.run([sys.executable, "-m", "camex", "status", *args],
                          capture_output=True, text=True, timeout=30, umask=umask)


def test_a_dead_socket_is_camex_up_0_and_output_is_atomic(tmp_path):
    """A socket left behind by a killed daemon: `--prometheus` still writes
    a complete file (exit 0) saying camex_up 0, and says why on stderr."""
    path = str(tmp_path / "dead.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)                 # bound, never listening: connect() is refused
    out = tmp_path / "textfile" / "camex.prom"
    out.parent.mkdir()
    out.write_text("old contents\n")
    try:
        r = _status("--prometheus", "--control-socket", path, "-o", str(out), umask=0o077)
    finally:
        s.close()
    assert r.returncode == 0, r.stderr
    assert "no answer" in r.stderr and r.stdout == ""
    _, samples = parsed(out.read_text())
    assert samples == {"camex_up": {frozenset({("daemon", path)}): 0.0}}
    assert oct(out.stat().st_mode & 0o777) == "0o644"   # node_exporter may read it
    assert os.listdir(out.parent) == ["camex.prom"]     # no temporary file left
    # Without --prometheus the same socket is an error, as before.
    assert _status("--control-socket", path).returncode == 1


def test_output_into_a_missing_directory_fails(tmp_path):
    r = _status("--prometheus", "--control-socket", str(tmp_path / "none.sock"),
                "-o", str(tmp_path / "nodir" / "camex.prom"))
    assert r.returncode == 1 and "--output" in r.stderr
