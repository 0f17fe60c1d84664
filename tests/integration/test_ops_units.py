"""The example systemd units: `make install-units` installs them, systemd
accepts them, and their command lines — expanded the way systemd expands
them, with the env files and a credential — bring up a working tunnel in
the lab."""

import os
import re
import shlex
import stat
import subprocess
import sys

import pytest

from lab.daemons import GLOBAL_PSK

pytestmark = pytest.mark.lab

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.path.dirname(os.path.dirname(sys.executable))


def _install(dest):
    r = subprocess.run(["make", "-s", "install-units", f"DESTDIR={dest}", f"PREFIX={VENV}"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return os.path.join(dest, "etc/systemd/system"), os.path.join(dest, "etc/camex")


def _service(path):
    """The [Service] keys of a unit: key -> list of values."""
    out = {}
    section = None
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            k, _, v = line.partition("=")
            out.setdefault(k, []).append(v)
    return out


def _env_file(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            env[k] = v
    return env


def _expand(cmdline, env, instance=None):
    """systemd's ExecStart expansion: ${X} inside a word, $X alone splits."""
    words = []
    for w in shlex.split(cmdline.replace("%i", instance or "")):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", w)
        if m:
            words += env.get(m.group(1), "").split()
        else:
            words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                                lambda m: env.get(m.group(1), ""), w))
    return words


def _unit_env(unit, env_file, creds):
    env = {}
    for e in unit.get("Environment", []):
        k, _, v = e.partition("=")
        env[k] = v
    env.update(_env_file(env_file))
    env["CREDENTIALS_DIRECTORY"] = creds
    # What systemd sets for StateDirectory= (/var/lib/camex), moved beside.
    env["STATE_DIRECTORY"] = os.path.join(os.path.dirname(creds), "state")
    return env


def test_install_units_and_systemd_accepts_them(tmp_path):
    units, etc = _install(str(tmp_path))
    for name in ("camex-server.service", "camex-client@.service"):
        st = os.stat(os.path.join(units, name))
        assert stat.S_IMODE(st.st_mode) == 0o644
    assert stat.S_IMODE(os.stat(etc).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(etc, "server.env")).st_mode) == 0o600
    # systemd-analyze verifies a template through one of its instances.
    inst = os.path.join(units, "camex-client@cam1.service")
    os.link(os.path.join(units, "camex-client@.service"), inst)
    r = subprocess.run(["systemd-analyze", "verify", os.path.join(units, "camex-server.service"),
                        inst], capture_output=True, text=True, timeout=60)
    print(f"\nsystemd-analyze verify: rc {r.returncode}, output {r.stdout + r.stderr!r}")
    assert r.returncode == 0 and (r.stdout + r.stderr).strip() == ""
    server = _service(os.path.join(units, "camex-server.service"))
    assert server["ExecStart"][0].startswith(f"{VENV}/bin/camex -M server")
    assert server["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert server["LoadCredential"] == ["camex.psk:/etc/camex/server.psk"]


def test_unit_command_lines_make_a_tunnel(star, camex, tmp_path):
    """Run exactly what the units would run (paths under /etc/camex and
    /run/camex moved into the test's directory)."""
    lab, cx = star, camex
    units, etc = _install(str(tmp_path / "root"))
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    (creds / "camex.psk").write_text(GLOBAL_PSK + "\n")
    os.chmod(creds / "camex.psk", 0o400)  # as systemd hands credentials over

    def moved(words):
        return [w.replace("/etc/camex", etc).replace("/run/camex", str(run)) for w in words]

    with open(os.path.join(etc, "camex.conf"), "w") as f:
        f.write("[defaults]\ngateway_ip=10.0.0.1\n")
    server = _service(os.path.join(units, "camex-server.service"))
    argv = moved(_expand(server["ExecStart"][0], _unit_env(server, os.path.join(etc, "server.env"),
                                                            str(creds))))
    srv = lab.server.spawn(argv, name="camex-server")
    srv.wait_for_line(r"listening on", timeout=15)

    client = _service(os.path.join(units, "camex-client@.service"))
    procs = []
    for ns, addr in ((lab.c1, "10.0.0.2"), (lab.c2, "10.0.0.3")):
        env_path = os.path.join(etc, f"client-{ns.role}.env")
        with open(env_path, "w") as f:
            f.write(f"CAMEX_SERVER={ns.server_ip}\nCAMEX_CLIENT_OPTS=-l {addr}/24 -g 10.0.0.1\n")
        argv = moved(_expand(client["ExecStart"][0], _unit_env(client, env_path, str(creds)),
                             instance=ns.role))
        procs.append(ns.spawn(argv, name="camex-client"))
    for p in procs:
        cx.wait_client(p)
    r = lab.c1.ping("10.0.0.3", count=3, interval=0.1)
    print(f"\nunit command lines (client: {' '.join(argv)}); ping through the tunnel "
          f"{r.received}/3; pid files {sorted(os.listdir(run))}")
    assert r.received == 3
    assert "encrypted" in srv.output()
    assert sorted(os.listdir(run)) == sorted(["client-c1.pid", "client-c1.sock", "client-c2.pid",
                                              "client-c2.sock", "server.pid", "server-7000.sock"])
