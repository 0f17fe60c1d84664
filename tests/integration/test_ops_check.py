"""`camex check-config` / `--check` touch no network, seen from outside the
process: under strace not one socket system call, no TUN device opened, no
process started; and in a fresh network namespace with no interface up
the check gives the same answer as outside it."""

import re
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.lab

CONF = """\
[defaults]
gateway_ip=10.0.0.1
route_cidr=10.251.0.0/24

[client C1]
local_cidr=10.0.0.2/24
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "camex.conf").write_text(CONF)
    psk = tmp_path / "server.psk"
    psk.write_text("check-passphrase\n")
    psk.chmod(0o600)
    return tmp_path


def _argv(files):
    return [sys.executable, "-m", "camex", "-M", "server", "-p", "7000",
            "-f", str(files / "camex.conf"), "-e", "--psk-file", str(files / "server.psk"),
            "--server-tun", "--check"]


def test_no_network_system_calls(files):
    """A server with its own TUN, checked under strace."""
    strace = shutil.which("strace")
    assert strace, "strace is missing: `make ops-deps` installs it"
    log = files / "strace.log"
    r = subprocess.run([strace, "-f", "-qq", "-o", str(log), "-e",
                        "trace=%network,clone,clone3,fork,vfork,execve,openat", *_argv(files)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "server TUN: 10.0.0.1/24" in r.stdout
    calls = log.read_text().splitlines()
    names = {m.group(1) for ln in calls if (m := re.match(r"\d+\s+(\w+)\(", ln))}
    print(f"\n{len(calls)} traced calls: {sorted(names)}")
    # Control: strace saw the check read its files.
    assert [c for c in calls if "camex.conf" in c] and [c for c in calls if "server.psk" in c]
    for call in ("socket", "socketpair", "connect", "bind", "sendto", "sendmsg",
                 "clone", "clone3", "fork", "vfork"):
        assert call not in names, [c for c in calls if re.match(rf"\d+\s+{call}\(", c)]
    assert len([c for c in calls if "execve(" in c]) == 1   # python itself, nothing else
    assert not [c for c in calls if "/dev/net/tun" in c or "/dev/camex" in c]


def test_same_answer_in_an_empty_network_namespace(files):
    unshare = shutil.which("unshare")
    assert unshare, "unshare is missing: `make ops-deps` installs util-linux"
    outside = subprocess.run(_argv(files), capture_output=True, text=True, timeout=60)
    inside = subprocess.run([unshare, "--net", *_argv(files)], capture_output=True, text=True,
                            timeout=60)
    assert outside.returncode == inside.returncode == 0, inside.stderr
    assert inside.stdout == outside.stdout
    # A bad file: the same errors, with their lines, in the namespace.
    (files / "camex.conf").write_text(CONF + "mtu=5\n[x]\n")
    inside = subprocess.run([unshare, "--net", *_argv(files)], capture_output=True, text=True,
                            timeout=60)
    conf = files / "camex.conf"
    assert inside.returncode == 1
    assert [ln for ln in inside.stderr.splitlines() if ln.startswith("error:")] == [
        f"error: {conf}:7: mtu: 5 is out of range 576..9000",
        f"error: {conf}:8: unknown section [x] (expected [defaults] or [client ID])"]
