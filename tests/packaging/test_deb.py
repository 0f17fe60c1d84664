"""The Debian packages: build, lint, install, upgrade, remove, purge.

`make deb` builds camex and camex-dkms; they are installed with apt into a
throwaway overlay of the VM lab's debootstrap chroot (lab.vm.chroot.scratch),
used there the way an operator would (camex --version, -h, camex-dissect on
a capture, man), upgraded, removed and purged, and what each step left is
recorded once (one lifecycle per run) and checked by the tests below.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.vm import chroot, kernels
from lab.vm.kernels import CACHE
from tests.packaging import pcap_sample
from tests.packaging.conftest import REPO, version

pytestmark = pytest.mark.lab

# Host paths bound into the chroot: the packages, and apt's downloads and
# lists kept across runs under the git-ignored lab cache.
APT_CACHE = CACHE / "deb-test-apt"
INSIDE_DEBS = "/debs"
SUITE = "trixie"          # the VM lab's build chroot (lab/vm/chroot.py)
APT = ["apt-get", "-q", "-y", "-o", "Acquire::Check-Valid-Until=false",
       "-o", "Dpkg::Options::=--force-confold", "-o", "Dpkg::Use-Pty=0"]
UNITS = ("camex-server.service", "camex-client@.service")


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], check=True,
                          capture_output=True, text=True).stdout.strip()


def test_both_packages_build_with_their_dependencies(debs):
    assert field(debs["camex"], "Package") == "camex"
    depends = field(debs["camex"], "Depends")
    assert "python3-cryptography" in depends and "python3-pyroute2" in depends
    assert "python3-scapy" in field(debs["camex"], "Recommends")
    assert field(debs["camex-dkms"], "Package") == "camex-dkms"
    assert "dkms" in field(debs["camex-dkms"], "Depends")


def test_lintian_is_clean(debs):
    """lintian at pedantic level: no tag left that is not overridden (and
    explained) in debian/*.lintian-overrides."""
    proc = subprocess.run(["lintian", "-I", "-E", "--pedantic", str(debs["changes"])],
                          capture_output=True, text=True)
    tags = [line for line in (proc.stdout + proc.stderr).splitlines()
            if re.match(r"^[EWIPX]: ", line)]
    assert tags == [], "\n".join(tags)


def test_dkms_conf_names_the_module(debs, tmp_path):
    subprocess.run(["dpkg-deb", "-x", str(debs["camex-dkms"]), str(tmp_path)], check=True)
    conf = (tmp_path / "usr/src" / f"camex-{version()}" / "dkms.conf").read_text()
    assert 'PACKAGE_NAME="camex"' in conf
    assert f'PACKAGE_VERSION="{version()}"' in conf        # dh_dkms -V filled it in
    assert 'BUILT_MODULE_NAME[0]="camex"' in conf
    assert 'AUTOINSTALL="yes"' in conf


# ---- one lifecycle in a scratch chroot ------------------------------------

def _upgrade_deb(deb: Path, out: Path) -> Path:
    """The same package with a higher version: what an upgrade installs."""
    tree = out / f"{deb.stem}.tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    text = control.read_text()
    v = re.search(r"^Version: (\S+)$", text, re.M).group(1)
    control.write_text(text.replace(f"Version: {v}", f"Version: {v}+up1"))
    new = out / deb.name.replace(f"_{v}_", f"_{v}+up1_")
    subprocess.run(["dpkg-deb", "-b", "--root-owner-group", str(tree), str(new)], check=True,
                   capture_output=True)
    shutil.rmtree(tree)
    return new


class Chroot:
    def __init__(self, root: Path):
        self.root = root

    def run(self, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return chroot.run_in(self.root, list(argv), env={"DEBIAN_FRONTEND": "noninteractive"},
                             timeout=timeout)

    def sh(self, script: str) -> subprocess.CompletedProcess:
        return self.run("sh", "-c", script)

    def ok(self, *argv: str) -> str:
        proc = self.run(*argv)
        assert proc.returncode == 0, f"{argv}: {(proc.stdout + proc.stderr)[-3000:]}"
        return proc.stdout

    def path(self, inside: str) -> Path:
        return Path(str(self.root) + inside)

    def camex_files(self) -> list[str]:
        """Every path named camex* in the chroot's own filesystem (-xdev:
        not the bound /proc, /dev, packages and caches)."""
        return self.sh("find / -xdev -name '*camex*' 2>/dev/null").stdout.split()

    def state(self) -> dict:
        """What an operator would look at after each step."""
        wants = self.sh("ls /etc/systemd/system/*.wants/ 2>/dev/null; "
                        "ls /var/lib/systemd/deb-systemd-helper-enabled/ -R 2>/dev/null").stdout
        pkg = self.path("/usr/lib/python3/dist-packages/camex")
        return {
            "status": self.sh("dpkg-query -W -f='${db:Status-Abbrev}' camex camex-dkms "
                              "2>/dev/null").stdout,
            # every module, subpackages included, relative to the package
            "python": sorted(str(p.relative_to(pkg)) for p in pkg.rglob("*.py"))
            if pkg.exists() else [],
            "units": [u for u in UNITS if self.path(f"/lib/systemd/system/{u}").exists()],
            "enabled": "camex-server.service" in wants,
            "etc": sorted(p.name for p in self.path("/etc/camex").iterdir())
            if self.path("/etc/camex").exists() else None,
            "state_dir": self.path("/var/lib/camex").exists(),
            "dkms_src": self.path(f"/usr/src/camex-{version()}").exists(),
            "dkms_tree": self.path("/var/lib/dkms/camex").exists(),
            "modules": sorted(str(p)[len(str(self.root)):] for p in
                              self.path("/lib/modules").glob("*/updates/dkms/camex.ko*")),
        }


@pytest.fixture(scope="module")
def lifecycle(debs, tmp_path_factory) -> dict:
    """Install, use, upgrade, remove and purge; record what each step left."""
    work = tmp_path_factory.mktemp("debs")
    for name in ("camex", "camex-dkms"):
        shutil.copy2(debs[name], work)
        _upgrade_deb(debs[name], work)
    pcap_sample.write(work / "sample.pcap")
    (APT_CACHE / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (APT_CACHE / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    v = version()
    rec: dict = {}
    with chroot.scratch(SUITE, extra={str(work): INSIDE_DEBS,
                                      str(APT_CACHE / "archives"): "/var/cache/apt/archives",
                                      str(APT_CACHE / "lists"): "/var/lib/apt/lists"}) as root:
        c = Chroot(root)
        c.ok(*APT, "update")
        before = set(c.camex_files())        # e.g. the lab's /.camex-ready
        # As an operator would: both packages from files, apt resolving
        # Debian's python3-cryptography, python3-pyroute2 and dkms; scapy
        # (a Recommends) and man-db named so that camex-dissect and man work;
        # gcc-12, which the lab's kernels' linux-headers packages depend on.
        rec["install"] = c.run(*APT, "install", "--no-install-recommends",
                               f"{INSIDE_DEBS}/camex_{v}_all.deb",
                               f"{INSIDE_DEBS}/camex-dkms_{v}_all.deb",
                               "python3-scapy", "man-db", "gcc-12")
        # A kernel installed after camex-dkms: its headers appear as
        # /lib/modules/<release>/build (the lab's unpacked tree, bound at the
        # same path) and its package runs the kernel hook that dkms installs.
        rec["hook"] = {}
        for name in kernels.TEST_KERNELS:
            tree = kernels.fetch(name)
            mod = f"/lib/modules/{tree.release}"
            hook = c.sh(f"mkdir -p {mod} && ln -sfn {tree.kdir} {mod}/build && "
                        f"/etc/kernel/postinst.d/dkms {tree.release}")
            vermagic = c.run("modinfo", "-F", "vermagic", f"{mod}/updates/dkms/camex.ko")
            rec["hook"][tree.release] = (hook, vermagic.stdout.split()[:1])
        rec["installed"] = c.state()
        rec["installed_files"] = c.camex_files()
        rec["version"] = c.run("camex", "--version")
        rec["help"] = c.run("camex", "-h")
        rec["which"] = c.run("python3", "-c", "import camex; print(camex.__file__)")
        rec["dissect"] = c.run("camex-dissect", "-k", pcap_sample.PASSPHRASE.decode(),
                               f"{INSIDE_DEBS}/sample.pcap")
        rec["man"] = c.run("man", "-w", "camex")
        rec["man_dissect"] = c.run("man", "-w", "camex-dissect")
        rec["man_text"] = c.sh("MANWIDTH=200 man camex 2>/dev/null | col -b")
        rec["server_unit"] = c.sh("cat /lib/systemd/system/camex-server.service").stdout
        rec["client_unit"] = c.sh("cat /lib/systemd/system/camex-client@.service").stdout
        rec["modes"] = c.sh("stat -c '%a %n' /etc/camex /etc/camex/* /var/lib/camex").stdout
        rec["conffiles"] = c.sh("dpkg-query -W -f='${Conffiles}' camex").stdout
        rec["dkms_status"] = c.run("dkms", "status")
        # The operator configures the server, then upgrades.
        c.sh("echo server-secret > /etc/camex/server.psk && chmod 600 /etc/camex/server.psk"
             " && echo CAMEX_PORT=7100 >> /etc/camex/server.env")
        rec["upgrade"] = c.run(*APT, "install", "--no-install-recommends",
                               f"{INSIDE_DEBS}/camex_{v}+up1_all.deb",
                               f"{INSIDE_DEBS}/camex-dkms_{v}+up1_all.deb")
        rec["upgraded"] = c.state()
        rec["upgraded_version"] = c.sh("dpkg-query -W -f='${Version}' camex").stdout
        rec["env_after_upgrade"] = c.sh("cat /etc/camex/server.env").stdout
        rec["remove"] = c.run(*APT, "remove", "camex", "camex-dkms")
        rec["removed"] = c.state()
        rec["psk_after_remove"] = c.path("/etc/camex/server.psk").exists()
        rec["purge"] = c.run(*APT, "purge", "camex", "camex-dkms")
        rec["purged"] = c.state()
        rec["leftovers"] = sorted(set(c.camex_files()) - before)
    return rec


def out(proc: subprocess.CompletedProcess) -> str:
    return (proc.stdout + proc.stderr)[-3000:]


def test_apt_installs_both_packages(lifecycle):
    assert lifecycle["install"].returncode == 0, out(lifecycle["install"])
    assert lifecycle["installed"]["status"] == "ii ii "
    # What test_purge_leaves_nothing looks for is there after install.
    for path in ("/usr/bin/camex", "/etc/camex", "/var/lib/camex",
                 "/usr/share/man/man8/camex.8.gz", f"/usr/src/camex-{version()}"):
        assert path in lifecycle["installed_files"]


def test_camex_runs_from_the_system_python(lifecycle):
    assert lifecycle["version"].returncode == 0, out(lifecycle["version"])
    assert lifecycle["version"].stdout.strip() == f"camex {version()}"
    assert lifecycle["help"].returncode == 0 and "--mode" in lifecycle["help"].stdout
    assert lifecycle["which"].stdout.strip() == \
        "/usr/lib/python3/dist-packages/camex/__init__.py"
    # every package of the tree is in the .deb, not only the top level
    for module in ("daemon/server.py", "tunnel/server.py", "legacy/client.py", "v2/framing.py",
                   "base/contract.py", "io/udp.py", "dissect/cli.py", "proto/v2.py"):
        assert module in lifecycle["installed"]["python"], module


def test_camex_dissect_decrypts_a_capture(lifecycle):
    proc = lifecycle["dissect"]
    assert proc.returncode == 0, out(proc)
    assert "enc REGISTER seq=1" in proc.stdout
    assert "CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.2" in proc.stdout
    assert "CX2P CONFIG CLIENT_ID=10.0.0.2" in proc.stdout
    assert "0 failures" in proc.stdout


def test_man_pages_are_installed_and_show_every_option(lifecycle):
    assert lifecycle["man"].stdout.strip() == "/usr/share/man/man8/camex.8.gz", \
        out(lifecycle["man"])
    assert lifecycle["man_dissect"].stdout.strip() == \
        "/usr/share/man/man1/camex-dissect.1.gz"
    from camex.daemon.options import build_parser
    text = lifecycle["man_text"].stdout
    for action in build_parser()._actions:
        for opt in action.option_strings:
            assert opt in text, f"{opt} missing from man camex"


def test_units_are_installed_for_usr_bin_and_the_server_waits_for_its_key(lifecycle):
    assert lifecycle["installed"]["units"] == list(UNITS)
    for unit in ("server_unit", "client_unit"):
        text = lifecycle[unit]
        assert "ExecStart=/usr/bin/camex " in text
        assert "/usr/local" not in text
    assert "ConditionPathExists=/etc/camex/server.psk" in lifecycle["server_unit"]
    assert lifecycle["installed"]["enabled"]


def test_configuration_is_root_only_conffiles(lifecycle):
    modes = dict(line.split(" ", 1)[::-1] for line in lifecycle["modes"].split("\n") if line)
    assert modes["/etc/camex"] == "700" and modes["/var/lib/camex"] == "700"
    for name in ("camex.conf", "server.env", "client-example.env"):
        assert modes[f"/etc/camex/{name}"] == "600"
        assert f"/etc/camex/{name}" in lifecycle["conffiles"]


def test_dkms_registers_the_module(lifecycle):
    assert lifecycle["installed"]["dkms_src"]
    assert f"camex/{version()}" in lifecycle["dkms_status"].stdout, out(lifecycle["dkms_status"])


def test_dkms_builds_the_module_for_each_kernel_installed_later(lifecycle):
    assert len(lifecycle["hook"]) == len(kernels.TEST_KERNELS)
    for release, (hook, vermagic) in lifecycle["hook"].items():
        assert hook.returncode == 0, out(hook)
        assert vermagic == [release]
    assert len(lifecycle["installed"]["modules"]) == len(kernels.TEST_KERNELS)


def test_upgrade_keeps_configuration_and_enablement(lifecycle):
    assert lifecycle["upgrade"].returncode == 0, out(lifecycle["upgrade"])
    assert lifecycle["upgraded_version"] == f"{version()}+up1"
    assert "CAMEX_PORT=7100" in lifecycle["env_after_upgrade"]
    assert lifecycle["upgraded"]["enabled"]
    # The old package's prerm removed the module, the new one's postinst
    # built it again for every kernel that has headers.
    assert lifecycle["upgraded"]["dkms_src"]
    assert lifecycle["upgraded"]["modules"] == lifecycle["installed"]["modules"] != []


def test_remove_keeps_configuration_and_drops_the_code(lifecycle):
    assert lifecycle["remove"].returncode == 0, out(lifecycle["remove"])
    removed = lifecycle["removed"]
    # camex keeps its conffiles (rc); camex-dkms has none, so it is gone (un).
    assert removed["status"] == "rc un "
    assert removed["python"] == [] and removed["units"] == []
    assert removed["etc"] is not None and "server.env" in removed["etc"]
    assert lifecycle["psk_after_remove"]
    assert not removed["dkms_src"] and not removed["dkms_tree"]
    assert removed["modules"] == []


def test_purge_leaves_nothing(lifecycle):
    assert lifecycle["purge"].returncode == 0, out(lifecycle["purge"])
    purged = lifecycle["purged"]
    assert purged["status"] == ""
    assert purged["etc"] is None and not purged["state_dir"]
    assert not purged["enabled"]
    assert lifecycle["leftovers"] == []


# ---- the host's Debian Python: what camex depends on, at bookworm's versions

SYSTEM_PYTHON_TESTS = ["tests/unit/test_core_legacy.py", "tests/unit/test_client_daemon_fakes.py",
                       "tests/unit/test_fuzz_codec.py", "tests/unit/test_v2_bulk.py",
                       "tests/unit/test_v2_handshake.py", "tests/unit/test_v2_lone_path.py",
                       "tests/unit/test_netlink_child.py"]


def test_the_dependencies_accept_the_hosts_debian_packages(debs):
    """camex's Depends accept Debian 12's own python3-cryptography and
    python3-pyroute2 (the host's), the versions the test below runs on."""
    depends = field(debs["camex"], "Depends")
    for pkg in ("python3-cryptography", "python3-pyroute2"):
        have = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], check=True,
                              capture_output=True, text=True).stdout
        m = re.search(rf"{pkg} \(>= ([^)]+)\)", depends)
        assert m, depends
        assert subprocess.run(["dpkg", "--compare-versions", have, "ge", m.group(1)]).returncode \
            == 0, f"{pkg} {have} does not satisfy >= {m.group(1)}"


def test_camex_runs_on_the_hosts_debian_python_packages():
    """The daemon's crypto and netlink under /usr/bin/python3 with Debian's
    own python3-cryptography and python3-pyroute2 (debian/README.Debian)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO),
           "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/root"}
    proc = subprocess.run(["/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-o", "addopts=", *SYSTEM_PYTHON_TESTS],
                          cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert re.search(r"^\d+ passed", proc.stdout.splitlines()[-1])
