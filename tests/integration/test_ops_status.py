"""Operating camex: `camex status` / `--json`, `camex reload`, pid files and
passphrase files, as an operator sees them on a live server and clients."""

import json
import os
import re
import stat
import subprocess
import tempfile
import time

import pytest

from lab import faults as F
from lab.daemons import Camex, GLOBAL_PSK, auto_config
from lab.netns import wait_until

pytestmark = pytest.mark.lab

NOBODY = 65534


def _camex(ns, cx, *args, user=None):
    """Run the camex CLI in ``ns`` (optionally as another user)."""
    argv = [cx.binary, *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return ns.run(argv, timeout=20)


def _status_json(ns, cx, sock):
    r = _camex(ns, cx, "status", "--json", "--control-socket", sock)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[sock]


def test_status_lists_clients_and_counts_traffic(star, camex):
    lab, cx = star, F.legacy(camex)
    srv_sock, c1_sock = F.ctl_path(lab, "srv"), F.ctl_path(lab, "c1")
    cx.start_server(encrypt=True, psk=GLOBAL_PSK, extra=["--control-socket", srv_sock])
    cx.start_client(lab.c1, encrypt=True, psk=GLOBAL_PSK, extra=["--control-socket", c1_sock])
    cx.start_client(lab.c2, encrypt=True, psk=GLOBAL_PSK,
                    extra=["--control-socket", F.ctl_path(lab, "c2")])
    lab.c1.wait_ping("10.0.0.3", timeout=10)

    ports = {a: F.status(F.ctl_path(lab, n))["local_port"]
             for a, n in (("10.0.0.2", "c1"), ("10.0.0.3", "c2"))}
    st = _status_json(lab.server, cx, srv_sock)
    assert st["mode"] == "server" and st["encrypted"] is True and st["port"] == 7000
    by_addr = {c["address"]: c for c in st["clients"]}
    assert set(by_addr) == {"10.0.0.2", "10.0.0.3"}
    assert by_addr["10.0.0.2"]["endpoint"] == f"10.250.0.2:{ports['10.0.0.2']}"
    assert by_addr["10.0.0.3"]["endpoint"] == f"10.250.1.2:{ports['10.0.0.3']}"
    for c in st["clients"]:
        assert c["protocol"] == "legacy" and c["key"] == "global" and c["mode"] == "manual"

    # Bytes move: 10 pings of 1000 bytes (1028-byte IP packets) each way.
    r = lab.c1.ping("10.0.0.3", count=10, interval=0.02, size=1000)
    assert r.received == 10
    st2 = _status_json(lab.server, cx, srv_sock)
    by2 = {c["address"]: c for c in st2["clients"]}
    for a in by_addr:
        for k in ("rx_bytes", "tx_bytes"):
            assert by2[a][k] - by_addr[a][k] >= 10 * 1028, (a, k)
        for k in ("rx_packets", "tx_packets"):
            assert by2[a][k] - by_addr[a][k] >= 10, (a, k)
    c1 = _status_json(lab.c1, cx, c1_sock)
    assert c1["mode"] == "client" and c1["address"] == "10.0.0.2/24"
    assert c1["server"] == "10.250.0.1:7000" and c1["local_port"] == ports["10.0.0.2"]
    assert c1["tx_packets"] >= 10 and c1["rx_bytes"] >= 10 * 1028

    # The text form says the same in lines an operator reads.
    text = _camex(lab.server, cx, "status", "--control-socket", srv_sock).stdout
    print("\n" + text)
    assert "server: port 7000 (encrypted), 2 client(s)" in text
    for a, p in (("10.0.0.2", ports["10.0.0.2"]), ("10.0.0.3", ports["10.0.0.3"])):
        assert re.search(rf"address: {re.escape(a)}\s+endpoint: 10\.250\.\d\.2:{p}\b", text)
    assert "transfer:" in text and "drops:" in text


def test_control_socket_is_root_only(star, camex):
    lab, cx = star, F.legacy(camex)
    # A directory everyone may traverse, so that only the socket's own mode
    # decides (tmp_path's parents are root-only).
    d = tempfile.mkdtemp(prefix="camex-ctl-")
    os.chmod(d, 0o755)
    sock = os.path.join(d, "server.sock")
    srv = cx.start_server(extra=["--control-socket", sock])
    st = os.stat(sock)
    print(f"\ncontrol socket {sock}: mode {stat.S_IMODE(st.st_mode):04o}, uid {st.st_uid}")
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    r = _camex(lab.server, cx, "status", "--control-socket", sock, user=NOBODY)
    assert r.returncode == 1
    assert "permission denied (root only)" in r.stderr
    r = _camex(lab.server, cx, "reload", "--control-socket", sock, user=NOBODY)
    assert r.returncode == 1 and "permission denied" in r.stderr
    assert _camex(lab.server, cx, "status", "--control-socket", sock).returncode == 0
    # Control: with the mode opened up, the same user gets in, so the refusal
    # above came from the socket's mode.
    os.chmod(sock, 0o666)
    assert _camex(lab.server, cx, "status", "--control-socket", sock, user=NOBODY).returncode == 0
    srv.stop()
    assert not os.path.exists(sock)
    os.rmdir(d)


def test_reload_applies_a_config_change(star, camex):
    """`camex reload` re-reads the configuration file: a client section
    added lets a waiting auto client in, one removed drops its client."""
    lab, cx = star, F.legacy(camex)
    sock = F.ctl_path(lab, "srv")
    conf = cx.write_config(auto_config({"C1": {"local_cidr": "10.0.0.2/24"}}))
    cx.start_server(extra=["--control-socket", sock, "-f", conf])
    cx.start_client(lab.c1, auto=True)
    c2 = cx.start_client(lab.c2, auto=True, wait=False)
    wait_until(lambda: F.status(sock)["drops"].get("unknown-client"), 10, "C2 refused")
    assert cx.tun_dev(c2) is None
    assert [c["client_id"] for c in F.server_clients(sock)] == ["C1"]

    with open(conf, "w") as f:
        f.write(auto_config({"C2": {"local_cidr": "10.0.0.3/24", "mtu": 1300}}))
    t0 = time.monotonic()
    r = _camex(lab.server, cx, "reload", "--control-socket", sock)
    assert r.returncode == 0 and "reload requested" in r.stdout
    cx.wait_client(c2, timeout=10)
    took = time.monotonic() - t0
    wait_until(lambda: [c["client_id"] for c in F.server_clients(sock)] == ["C2"], 5,
               "C1 dropped, C2 registered")
    assert "mtu 1300" in c2.find(r"tunnel up: .*").group(0)
    print(f"\nreload: C2 admitted and configured {took:.2f} s after `camex reload` "
          f"(its retry interval is 5 s); C1 dropped")


def test_stale_pid_file_does_not_stop_a_restart(star, camex):
    lab, cx = star, F.legacy(camex)
    pidfile = os.path.join(lab.logdir, "run", "camex-server.pid")
    os.makedirs(os.path.dirname(pidfile))
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(pidfile, "w") as f:
        f.write(f"{dead.pid}\n")
    srv = cx.start_server(extra=["-P", pidfile, "--control-socket", F.ctl_path(lab, "a")])
    assert open(pidfile).read().strip() == str(srv.pid)
    # A second server with the same pid file refuses while the first runs.
    other = lab.server.run(cx.server_argv(extra=["-p", "7001", "-P", pidfile,
                                                 "--control-socket", F.ctl_path(lab, "b")]))
    assert other.returncode == 1 and "names a running process" in other.stderr
    # Killed hard, the first leaves its pid file behind: a restart works.
    srv.signal(9)
    srv.wait(5)
    assert os.path.exists(pidfile)
    t0 = time.monotonic()
    srv2 = cx.start_server(extra=["-P", pidfile, "--control-socket", F.ctl_path(lab, "c")])
    print(f"\nrestart over a stale pid file: listening after {time.monotonic() - t0:.2f} s")
    assert open(pidfile).read().strip() == str(srv2.pid)
    srv2.signal(15)
    assert srv2.wait(5) == 0
    assert not os.path.exists(pidfile)


def test_psk_file_readable_by_others_is_refused(star, camex):
    lab, cx = star, F.legacy(camex)
    path = os.path.join(lab.logdir, "psk")
    with open(path, "w") as f:
        f.write(GLOBAL_PSK + "\n")
    for mode in (0o644, 0o640, 0o604):
        os.chmod(path, mode)
        r = lab.server.run(cx.server_argv(encrypt=True, extra=["--psk-file", path]), timeout=10)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1, r.stderr
        assert "--psk-file" in lines[0] and f"{mode:04o}" in lines[0] and "chmod 600" in lines[0]
    print(f"\nrefused: {lines[0]}")
    os.chmod(path, 0o600)
    srv = cx.start_server(encrypt=True, extra=["--psk-file", path,
                                               "--control-socket", F.ctl_path(lab, "s")])
    assert "key fingerprint beeba85739952129851313a1f979fafc" in srv.output()


def test_status_of_v2_clients_counts_bytes_and_packets(star):
    """The same status for clients on the v2 protocol: each with its
    endpoint, protocol v2, and traffic each way in bytes and packets."""
    lab = star
    cx = Camex(lab, protocol="v2")
    sock = F.ctl_path(lab, "srv")
    cx.start_server(encrypt=True, psk=GLOBAL_PSK, extra=["--control-socket", sock])
    for ns in (lab.c1, lab.c2):
        cx.start_client(ns, encrypt=True, psk=GLOBAL_PSK,
                        extra=["--control-socket", F.ctl_path(lab, ns.role)])
    lab.c1.wait_ping("10.0.0.3", timeout=10)
    before = {c["address"]: c for c in _status_json(lab.server, cx, sock)["clients"]}
    assert lab.c1.ping("10.0.0.3", count=10, interval=0.02, size=1000).received == 10
    after = {c["address"]: c for c in _status_json(lab.server, cx, sock)["clients"]}
    text = _camex(lab.server, cx, "status", "--control-socket", sock).stdout
    print("\n" + text)
    assert set(after) == {"10.0.0.2", "10.0.0.3"}
    for a, c in after.items():
        port = F.status(F.ctl_path(lab, "c1" if a == "10.0.0.2" else "c2"))["local_port"]
        assert c["protocol"] == "v2" and c["endpoint"].endswith(f":{port}")
        for k in ("rx_packets", "tx_packets"):
            assert c[k] - before[a][k] >= 10, (a, k)
        for k in ("rx_bytes", "tx_bytes"):
            assert isinstance(c[k], int) and c[k] - (before[a][k] or 0) >= 10 * 1028, (a, k, c[k])


def test_logs_under_systemd_carry_syslog_priorities(star, camex):
    """Under systemd (JOURNAL_STREAM set) every line starts with a <N>
    syslog priority and has no time stamp of its own, so journald keeps
    levels; one line per event."""
    lab, cx = star, F.legacy(camex)
    srv = lab.server.spawn(cx.server_argv(extra=["--control-socket", F.ctl_path(lab, "s")]),
                           name="camex-server", env={"JOURNAL_STREAM": "8:12345"})
    srv.wait_for_line(r"listening on", timeout=15)
    bad = lab.server.run(cx.server_argv(extra=["-p", "7000", "--control-socket",
                                               F.ctl_path(lab, "t")]))
    srv.stop()
    lines = srv.output().splitlines()
    print("\n" + "\n".join(lines))
    assert lines and all(re.match(r"<[0-7]>(DEBUG|INFO|WARNING|ERROR) \S", ln) for ln in lines)
    assert any(ln.startswith("<6>INFO listening on") for ln in lines)
    # Without systemd: time stamp, program and pid, level; an error is one line.
    err = bad.stderr.strip().splitlines()
    assert bad.returncode == 1 and len(err) == 1
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ camex\[\d+\] ERROR --port: ", err[0]), err
