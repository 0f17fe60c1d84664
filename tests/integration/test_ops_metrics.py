"""`camex status --prometheus` against a running lab, read with a real
Prometheus text parser (prometheus_client's): a server with a legacy and a
v2 client, and the clients themselves, as a scraper would see them."""

import os
import re
import shlex
import socket
import stat
import subprocess
import textwrap
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab import faults as F
from lab.daemons import Camex, GLOBAL_PSK, auto_config, camex_binary
from lab.netns import wait_until

pytestmark = pytest.mark.lab

C2_PSK = "metrics-c2-own-passphrase"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def scrape(ns, cx, *sockets):
    """`camex status --prometheus` for these daemons: {(name, labels): value}."""
    argv = [cx.binary, "status", "--prometheus"]
    for s in sockets:
        argv += ["--control-socket", s]
    r = ns.run(argv, timeout=20)
    assert r.returncode == 0, r.stderr
    out = {}
    for fam in text_string_to_metric_families(r.stdout):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out, r.stdout


def one(samples, name, **labels):
    """The value of the one sample of `name` whose labels include `labels`."""
    hits = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0]


def labels_of(samples, name, **labels):
    hits = [dict(ls) for (n, ls), _ in samples.items()
            if n == name and set(labels.items()) <= ls]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0]


def test_prometheus_metrics_of_a_running_lab(star):
    lab = star
    cx, legacy_cx = Camex(lab, protocol="v2"), F.legacy(Camex(lab))
    srv, c1, c2 = (F.ctl_path(lab, n) for n in ("srv", "c1", "c2"))
    conf = cx.write_config(auto_config({"C1": {"local_cidr": "10.0.0.2/24"},
                                        "C2": {"local_cidr": "10.0.0.3/24", "psk": C2_PSK}}))
    t0 = time.time()
    cx.start_server(encrypt=True, psk=GLOBAL_PSK, config=conf,
                    extra=["--control-socket", srv])
    legacy_cx.start_client(lab.c1, auto=True, name="C1", encrypt=True, psk=GLOBAL_PSK,
                           extra=["--control-socket", c1])
    cx.start_client(lab.c2, auto=True, name="C2", psk=C2_PSK,
                    extra=["--control-socket", c2])
    lab.c1.wait_ping("10.0.0.3", timeout=15)

    before, _ = scrape(lab.server, cx, srv, c1, c2)
    assert lab.c1.ping("10.0.0.3", count=10, interval=0.02, size=1000).received == 10
    # Junk at the server's port: counted as drops, not as anyone's traffic.
    junk = lab.c1.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(5):
        junk.sendto(b"\x00" * 40, ("10.250.0.1", cx.port))
    junk.close()
    after, text = scrape(lab.server, cx, srv, c1, c2)
    t1 = time.time()
    print("\n" + text)

    d = {"daemon": srv}
    assert one(after, "camex_up", **d) == 1
    assert one(after, "camex_up", daemon=c1) == 1 and one(after, "camex_up", daemon=c2) == 1
    assert labels_of(after, "camex_daemon_info", **d) == {
        **d, "role": "server", "protocols": "v2,legacy", "encrypted": "true"}
    assert one(after, "camex_clients", **d, protocol="legacy") == 1
    assert one(after, "camex_clients", **d, protocol="v2") == 1

    port = {a: F.status(p)["local_port"] for a, p in (("10.0.0.2", c1), ("10.0.0.3", c2))}
    who = {"10.0.0.2": dict(d, client="C1", address="10.0.0.2", protocol="legacy"),
           "10.0.0.3": dict(d, client="C2", address="10.0.0.3", protocol="v2")}
    info = {a: labels_of(after, "camex_client_info", **who[a]) for a in who}
    assert info["10.0.0.2"]["endpoint"] == f"10.250.0.2:{port['10.0.0.2']}"
    assert info["10.0.0.3"]["endpoint"] == f"10.250.1.2:{port['10.0.0.3']}"
    assert (info["10.0.0.2"]["mode"], info["10.0.0.2"]["key"]) == ("auto", "global")
    assert (info["10.0.0.3"]["mode"], info["10.0.0.3"]["key"]) == ("auto", "C2")

    # 10 pings of 1000 bytes (1028-byte IP packets) each way, relayed: each
    # client's counters on the server grow by at least that in both directions.
    for a, lab_ in who.items():
        for name in ("camex_received_bytes_total", "camex_sent_bytes_total"):
            grew = one(after, name, **lab_) - one(before, name, **lab_)
            assert grew >= 10 * 1028, (a, name, grew)
        for name in ("camex_received_packets_total", "camex_sent_packets_total"):
            assert one(after, name, **lab_) - one(before, name, **lab_) >= 10, (a, name)
        hs = one(after, "camex_last_handshake_timestamp_seconds", **lab_)
        rx = one(after, "camex_last_received_timestamp_seconds", **lab_)
        assert t0 - 1 <= hs <= t1 + 1, (a, hs, t0, t1)
        assert t0 - 1 <= rx <= t1 + 1 and rx >= hs - 1, (a, rx)

    assert one(after, "camex_handshakes_total", **d) >= 1
    assert one(after, "camex_cookies_sent_total", **d) == 0
    drops = lambda m: sum(v for (n, ls), v in m.items()  # noqa: E731
                          if n == "camex_drops_total" and ("daemon", srv) in ls)
    assert drops(after) - drops(before) >= 5
    rss = one(after, "camex_process_resident_memory_bytes", **d)
    assert 4 << 20 < rss < 200 << 20, rss
    assert one(after, "camex_process_resident_memory_peak_bytes", **d) >= rss

    # The clients' own series: their one tunnel, as they count it.
    me1 = dict(daemon=c1, client="C1", address="10.0.0.2", protocol="legacy")
    me2 = dict(daemon=c2, client="C2", address="10.0.0.3", protocol="v2")
    assert one(after, "camex_sent_bytes_total", **me1) - \
        one(before, "camex_sent_bytes_total", **me1) >= 10 * 1028
    assert one(after, "camex_received_bytes_total", **me2) - \
        one(before, "camex_received_bytes_total", **me2) >= 10 * 1028
    assert one(after, "camex_handshakes_total", daemon=c2) >= 1
    assert t0 - 1 <= one(after, "camex_last_handshake_timestamp_seconds", **me2) <= t1 + 1
    assert not [k for k in after if k[0] == "camex_handshakes_total" and ("daemon", c1) in k[1]]
    assert labels_of(after, "camex_daemon_info", daemon=c1)["role"] == "client"


def test_a_stopped_daemon_is_camex_up_0(star, camex):
    """A daemon killed without cleaning up leaves its socket: the scrape
    still succeeds and says camex_up 0 for it, 1 for the live one."""
    lab, cx = star, F.legacy(camex)
    srv, c1 = F.ctl_path(lab, "srv"), F.ctl_path(lab, "c1")
    cx.start_server(extra=["--control-socket", srv])
    client = cx.start_client(lab.c1, extra=["--control-socket", c1])
    client.signal(9)
    client.wait(5)
    samples, _ = scrape(lab.server, cx, srv, c1)
    assert one(samples, "camex_up", daemon=srv) == 1
    assert one(samples, "camex_up", daemon=c1) == 0
    assert [k for k in samples if k[0] != "camex_up" and ("daemon", c1) in k[1]] == []


def _documented_units():
    """The unit files docs/OPERATIONS.md tells an operator to write:
    {file name: text}, from the indented block after each
    `<!-- unit: NAME -->` marker."""
    text = open(os.path.join(REPO, "docs", "OPERATIONS.md")).read()
    return {m.group(1): textwrap.dedent(m.group(2)).strip() + "\n"
            for m in re.finditer(r"<!-- unit: (\S+) -->\n((?:    .*\n|\n)+)", text)}


def test_documented_timer_units_verify_and_write_a_parsable_file(tmp_path):
    units = _documented_units()
    assert set(units) == {"camex-metrics.service", "camex-metrics.timer"}, units
    service = units["camex-metrics.service"]
    m = re.search(r"^ExecStart=(.*)$", service, re.M)
    argv = shlex.split(m.group(1))
    assert argv[:4] == ["/usr/local/bin/camex", "status", "--prometheus", "-o"]
    # The same unit, with camex where this checkout has it and the textfile
    # directory in the test's directory.
    out = tmp_path / "node-exporter" / "camex.prom"
    out.parent.mkdir()
    binary = camex_binary()
    for name, text in units.items():
        text = text.replace("/usr/local/bin/camex", binary).replace(
            "/var/lib/prometheus/node-exporter/camex.prom", str(out))
        (tmp_path / name).write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "camex-metrics.service"),
                        str(tmp_path / "camex-metrics.timer")],
                       capture_output=True, text=True, timeout=60)
    print(f"\nsystemd-analyze verify: rc {r.returncode}, output {r.stdout + r.stderr!r}")
    assert r.returncode == 0 and (r.stdout + r.stderr).strip() == ""
    # What ExecStart runs (it reads whatever daemons /run/camex holds on
    # this machine, maybe none): exit 0 and a file a scraper reads.
    r = subprocess.run([binary, *argv[1:-1], str(out)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    families = list(text_string_to_metric_families(out.read_text()))
    assert all(f.name.startswith("camex_") for f in families)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


NODE_EXPORTER = os.path.join(REPO, "lab", "cache", "node-exporter", "usr", "bin",
                             "prometheus-node-exporter")


def _http_get(ns, port, path="/metrics"):
    """GET over the namespace's loopback; the body, or None while nobody listens."""
    s = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionRefusedError:
        return None
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0], head
    return body.decode()


def _camex_samples(text):
    return {(s.name, frozenset(s.labels.items()), s.value)
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.name.startswith("camex_")}


def test_node_exporter_textfile_collector_serves_the_file(star, tmp_path):
    """What the documented timer writes, served by Debian's node_exporter
    (its textfile collector, a Go parser stricter than Python's): no scrape
    error, and every camex sample comes out as it went in."""
    assert os.access(NODE_EXPORTER, os.X_OK), "node_exporter is missing: make node-exporter"
    lab = star
    cx = Camex(lab, protocol="v2")
    srv, c1, c2 = (F.ctl_path(lab, n) for n in ("srv", "c1", "c2"))
    cx.start_server(psk=GLOBAL_PSK, extra=["--control-socket", srv])
    cx.start_client(lab.c1, psk=GLOBAL_PSK, extra=["--control-socket", c1])
    cx.start_client(lab.c2, psk=GLOBAL_PSK, extra=["--control-socket", c2])
    assert lab.c1.ping("10.0.0.3", count=5, interval=0.05, size=500).received == 5
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    prom = textdir / "camex.prom"
    r = lab.server.run([cx.binary, "status", "--prometheus", "--control-socket", srv,
                        "--control-socket", c1, "--control-socket", c2, "-o", str(prom)])
    assert r.returncode == 0, r.stderr
    lab.server.spawn([NODE_EXPORTER, "--web.listen-address=127.0.0.1:9100",
                      "--collector.disable-defaults", "--collector.textfile",
                      f"--collector.textfile.directory={textdir}"], name="node-exporter")
    body = wait_until(lambda: _http_get(lab.server, 9100), 15, "node_exporter answers")
    errors = [s.value for f in text_string_to_metric_families(body) for s in f.samples
              if s.name == "node_textfile_scrape_error"]
    served, written = _camex_samples(body), _camex_samples(prom.read_text())
    print(f"\nnode_textfile_scrape_error {errors}; {len(served)} camex samples served, "
          f"{len(written)} written")
    assert errors == [0.0]
    assert served == written and len(written) > 30
    assert any(n == "camex_received_bytes_total" and v >= 5 * 528 for n, _, v in served)
