"""`camex check-config -f FILE` and `camex -M ... --check`: what an operator
sees for good and bad configurations (every problem with its file and line,
the exit code), that no passphrase is ever printed, and that a check
touches no network (no socket, no TUN, no netlink, no helper process; the
same under strace and in an empty network namespace: test_ops_check.py)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from camex.daemon import check
from camex.legacy import codec

GOOD = """\
[defaults]
gateway_ip=10.0.0.1
mtu=1500
route_cidr=10.251.0.0/24

[client C1]
local_cidr=10.0.0.2/24

[client C2]
local_cidr=10.0.0.3/24
psk=per-client-secret-c2
route_cidr=192.168.7.0/24
"""

# Six mistakes on six lines; the parser must name every one.
BAD = """\
[defaults]
mtu=5
[bogus]
mtu=7
just words
[client C1]
local_cidr=10.0.0.0/24
psk=
[client c1]
route_cidr=10.1.2.3/16
"""
BAD_LINES = {2: "mtu: 5 is out of range", 3: "unknown section [bogus]",
             4: "mtu: 7 is out of range", 5: "expected key=value",
             7: "is the network address", 8: "psk: empty value",
             9: "duplicate section [client c1]", 10: "host bits set"}

GLOBAL_PSK = "global-secret-passphrase"


def camex(*args, env=None, cwd=None):
    """The `camex` command as a user runs it."""
    e = {k: v for k, v in os.environ.items() if k != "CAMEX_PSK"}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "camex", *args], capture_output=True,
                          text=True, timeout=60, env=e, cwd=cwd)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "good.conf").write_text(GOOD)
    (tmp_path / "bad.conf").write_text(BAD)
    psk = tmp_path / "server.psk"
    psk.write_text(GLOBAL_PSK + "\n")
    psk.chmod(0o600)
    return tmp_path


def _error_lines(stderr):
    return [ln for ln in stderr.splitlines() if ln.startswith("error: ")]


def test_good_file_prints_what_would_be_served(files):
    conf, psk = files / "good.conf", files / "server.psk"
    r = camex("check-config", "-f", str(conf), "-e", "--psk-file", str(psk), "-p", "7000")
    print(r.stdout + r.stderr)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    out = r.stdout
    assert "server: UDP port 7000 on every address; protocols v2 and legacy, " \
           "legacy encrypted" in out
    # The key fingerprint the server logs at start (a client's log shows the same).
    fp = codec.fingerprint(codec.derive_key(GLOBAL_PSK.encode()))
    assert f"global passphrase from --psk-file {psk}, legacy key fingerprint {fp}" in out
    assert "own passphrases (psk=): C2" in out
    assert f"configuration: {conf}, 2 client section(s)" in out
    c1 = re.search(r"^  client C1 \(line 6\): (.*)$", out, re.M).group(1)
    assert c1 == ("address 10.0.0.2/24, gateway 10.0.0.1, mtu 1500, "
                  "routes 10.251.0.0/24; key global")
    c2 = re.search(r"^  client C2 \(line 9\): (.*)$", out, re.M).group(1)
    assert c2 == ("address 10.0.0.3/24, gateway 10.0.0.1, mtu 1500, routes "
                  "10.251.0.0/24, 192.168.7.0/24; key its own (psk=)")
    assert "control socket: /run/camex/server-7000.sock" in out
    for secret in (GLOBAL_PSK, "per-client-secret-c2"):
        assert secret not in out + r.stderr


def test_every_problem_of_a_bad_file_with_its_line(files):
    conf = files / "bad.conf"
    r = camex("check-config", "-f", str(conf))
    print(r.stderr)
    assert r.returncode == 1
    assert r.stdout == ""            # a daemon that would not start serves nothing
    errors = _error_lines(r.stderr)
    assert len(errors) == len(BAD_LINES)
    for line, (lineno, words) in zip(errors, sorted(BAD_LINES.items())):
        assert line.startswith(f"error: {conf}:{lineno}: "), line
        assert words in line, line
    assert r.stderr.splitlines()[-1] == \
        f"camex: {len(BAD_LINES)} problem(s): the daemon would not start"


def test_options_and_file_problems_together(files):
    """A bad option does not hide the file's problems, nor the other way round."""
    conf, psk = files / "bad.conf", files / "server.psk"
    psk.chmod(0o644)
    r = camex("check-config", "-f", str(conf), "-p", "99999", "--psk-file", str(psk),
              "--max-clients", "0")
    print(r.stderr)
    assert r.returncode == 1
    errors = _error_lines(r.stderr)
    assert errors[:3] == [
        "error: --port: 99999 is out of range 1..65535",
        "error: --max-clients: 0 is out of range 1..1048576",
        f"error: --psk-file: '{psk}' is accessible by group/others (mode 0644); "
        "run chmod 600 on it"]
    assert [int(e.split(":")[2]) for e in errors[3:]] == sorted(BAD_LINES)


@pytest.mark.parametrize("extra, mtu", [
    (["-b", "192.0.2.1"], 1438),                       # IPv4 only: the v2 clients' 1438
    (["-b", "192.0.2.1", "-e"], 1429),                 # legacy encrypted served too
    (["-b", "2001:db8::1", "-e"], 1409),               # ... over IPv6
    (["-b", "192.0.2.1", "--protocol", "legacy"], 1472),  # plaintext legacy only
    (["-t", "1300"], 1300),                            # -t sets any MTU
])
def test_server_tun_mtu_follows_the_clients_rule(files, extra, mtu):
    conf, psk = files / "good.conf", files / "server.psk"
    r = camex("check-config", "-p", "7000", "-f", str(conf), "--psk-file", str(psk),
              "--server-tun", *extra)
    assert r.returncode == 0, r.stderr
    assert f"server TUN: 10.0.0.1/24 mtu {mtu}, routes none" in r.stdout, r.stdout


def test_server_tun_takes_a_smaller_mtu_of_the_defaults(files, tmp_path):
    conf = tmp_path / "small.conf"
    conf.write_text((files / "good.conf").read_text().replace("mtu=1500", "mtu=1280"))
    r = camex("check-config", "-p", "7000", "-f", str(conf), "--psk-file",
              str(files / "server.psk"), "--server-tun")
    assert r.returncode == 0, r.stderr
    assert "server TUN: 10.0.0.1/24 mtu 1280, routes none" in r.stdout, r.stdout


def test_check_option_on_the_daemon_command_line(files):
    conf, psk = files / "good.conf", files / "server.psk"
    r = camex("-M", "server", "-p", "7000", "-f", str(conf), "--psk-file", str(psk),
              "--server-tun", "--check")
    assert r.returncode == 0, r.stderr
    # --server-tun takes the gateway of [defaults]; a psk without -e is v2 (encrypted).
    # Its MTU follows the clients' rule: mtu=1500 of [defaults] lowered to
    # what fits a 1500-byte path for v2 (and plaintext legacy) over IPv6,
    # which the default socket accepts: 1418.
    assert "server TUN: 10.0.0.1/24 mtu 1418, routes none" in r.stdout
    assert "protocols v2 and legacy, legacy plaintext" in r.stdout
    # The same file and options as check-config say the same.
    r2 = camex("check-config", "-p", "7000", "-f", str(conf), "--psk-file", str(psk),
               "--server-tun")
    assert r2.stdout == r.stdout
    # A start needs a port, so --check on the daemon's command line does too.
    r = camex("-M", "server", "-f", str(conf), "--check")
    assert r.returncode == 1 and _error_lines(r.stderr) == ["error: --port: required (1..65535)"]
    # And it names every problem where a start stops at the first.
    r = camex("-M", "server", "-p", "7000", "-f", str(files / "bad.conf"), "--check")
    assert r.returncode == 1 and len(_error_lines(r.stderr)) == len(BAD_LINES)


def test_a_start_names_the_first_problem_and_counts_the_others(files):
    conf = files / "bad.conf"
    r = camex("-M", "server", "-p", "7000", "-f", str(conf), "--control-socket",
              str(files / "ctl.sock"))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].endswith(f"ERROR --config: {conf}:2: mtu: 5 is out of range 576..9000 "
                             f"(and {len(BAD_LINES) - 1} more problem(s): `camex check-config "
                             f"-f {conf}` lists them)"), lines[0]


def test_warnings_do_not_fail_the_check(files):
    conf = files / "warn.conf"
    conf.write_text("[client A]\nlocal_cidr=10.0.0.2/24\ncolour=blue\n"
                    "[client B]\nlocal_cidr=10.0.0.2/24\ngateway_ip=10.0.0.9\n")
    r = camex("check-config", "-f", str(conf))
    print(r.stderr)
    assert r.returncode == 0
    assert r.stderr.splitlines() == [
        f"warning: {conf}:3: unknown key 'colour' ignored",
        f"warning: {conf}:4: [client B] has the address 10.0.0.2 of [client A] (line 1): "
        "only one of them can be registered at a time"]
    assert "client B (line 4): address 10.0.0.2/24, gateway 10.0.0.9" in r.stdout
    # No -p: check-config does not need one, and says what it would change.
    assert r.stdout.startswith("server: UDP port (not given) on every address; protocols legacy")
    assert "  control socket: /run/camex/server-PORT.sock (PORT: the -p of the start)" in r.stdout


def test_a_client_section_holding_a_gateway_is_an_error_not_a_warning(files):
    """The address policy: a gateway is the server's address, whichever
    section names it; check-config says so with the file and line."""
    conf = files / "gw.conf"
    conf.write_text("[client A]\nlocal_cidr=10.0.0.2/24\n"
                    "[client C]\nlocal_cidr=10.0.0.9/24\ngateway_ip=10.0.0.9\n")
    r = camex("check-config", "-f", str(conf))
    assert r.returncode == 1
    assert any(line.startswith(f"error: {conf}:4:") and "10.0.0.9 is an address of the server"
               in line for line in r.stderr.splitlines()), r.stderr


@pytest.mark.parametrize("args,message", [
    (["--no-legacy"], "--no-legacy: v2 needs a passphrase (-k, --psk-file, or psk= in "
                      "client sections)"),
    (["--server-tun"], "--server-tun: needs -l A.B.C.D/NN or gateway_ip in the [defaults] "
                       "of the configuration file"),
    (["-e"], "--encrypt: needs a passphrase (--psk, --psk-file or CAMEX_PSK)"),
    (["-a"], "--auto: only for a client (the server hands out auto profiles)"),
])
def test_what_the_daemon_refuses_at_start(files, args, message):
    conf = files / "plain.conf"
    conf.write_text("[client A]\nlocal_cidr=10.0.0.2/24\n")
    r = camex("check-config", "-f", str(conf), *args)
    assert r.returncode == 1
    assert _error_lines(r.stderr) == [f"error: {message}"]


def test_missing_file(files):
    r = camex("check-config", "-f", str(files / "nope.conf"))
    assert r.returncode == 1
    assert _error_lines(r.stderr) == [
        f"error: {files / 'nope.conf'}: cannot read: No such file or directory"]


def test_default_file_may_be_absent_as_at_a_start(files):
    """Without -f a start accepts a missing /etc/camex/camex.conf (manual
    clients only); the check says so rather than failing."""
    r = check.run(["-M", "server", "-p", "7000"], environ={})
    if os.path.exists("/etc/camex/camex.conf"):
        pytest.fail("this test assumes no /etc/camex/camex.conf on the test machine")
    assert r.errors == []
    assert "  configuration: none (/etc/camex/camex.conf does not exist: manual clients " \
           "only)" in r.lines


def test_unreadable_option_stops_there(files):
    r = camex("check-config", "--bogus", "-f", str(files / "bad.conf"))
    assert r.returncode == 1
    assert _error_lines(r.stderr) == ["error: --bogus: unknown option"]


def test_client_check(files):
    psk = files / "server.psk"
    r = camex("-M", "client", "-s", "vpn.example.net", "-p", "7000", "-l", "10.0.0.2/24",
              "-g", "10.0.0.1", "-c", "10.251.0.0/24", "-e", "--psk-file", str(psk),
              "--protocol", "legacy", "--check")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:4] == [
        "client: to vpn.example.net:7000",
        "  protocol: legacy, encrypted",
        f"  keys: global passphrase from --psk-file {psk}, legacy key fingerprint "
        f"{codec.fingerprint(codec.derive_key(GLOBAL_PSK.encode()))}",
        "  address 10.0.0.2/24, gateway 10.0.0.1, routes 10.251.0.0/24, "
        "mtu default for the protocol"]
    r = camex("-M", "client", "-s", "vpn.example.net", "-p", "7000", "-g", "10.0.0.1",
              "--check")
    assert r.returncode == 1
    assert _error_lines(r.stderr) == [
        "error: --local-cidr: required for a manual client (or use --auto)"]


def test_keylog_is_checked_but_not_created(files):
    path = files / "keys" / "v2.keylog"
    argv = ["-M", "server", "-p", "7000", "-k", GLOBAL_PSK, "--keylog", str(path)]
    r = check.run(argv, environ={})
    assert r.errors == [f"--keylog: {files / 'keys'} does not exist"]
    (files / "keys").mkdir()
    r = check.run(argv, environ={})
    assert r.errors == [] and not path.exists()
    assert f"  keylog: v2 session keys appended to {path} (debugging only)" in r.lines


class NoNetwork(Exception):
    pass


def _refuse(*args, **kwargs):
    raise NoNetwork("a check must not touch the network")


def test_no_socket_no_helper_in_process(files, monkeypatch):
    """Every socket constructor and fork refuses: the checks still run to
    the end, for a server with its own TUN and an auto client without a
    name (both would do netlink work at a start)."""
    for name in ("socket", "socketpair", "create_connection", "getaddrinfo", "fromfd"):
        monkeypatch.setattr(socket, name, _refuse)
    monkeypatch.setattr(os, "fork", _refuse)
    monkeypatch.setattr(os, "open", _guard_open(os.open))
    conf = files / "good.conf"
    r = check.run(["-M", "server", "-p", "7000", "-f", str(conf), "-k", GLOBAL_PSK,
                   "--server-tun"], environ={})
    assert r.errors == [] and any(ln.startswith("  server TUN: 10.0.0.1/24") for ln in r.lines)
    r = check.run(["-M", "client", "-a", "-s", "vpn.example.net", "-p", "7000"], environ={})
    assert r.errors == []
    assert any("MAC address of the default-route interface (read at start)" in ln
               for ln in r.lines)


def _guard_open(real):
    def guarded(path, *args, **kwargs):
        if str(path).startswith(("/dev/net/tun", "/dev/camex")):
            _refuse()
        return real(path, *args, **kwargs)
    return guarded
