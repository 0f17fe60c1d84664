"""The kernel matrix of the VM lab and how each kernel is fetched.

Each kernel is a Debian linux-image + linux-headers pair taken from one
Debian suite.  They are never installed on the host: a private apt
configuration under lab/vm/cache/apt/<suite-set>/ (its own sources list and
package lists, not touching /etc/apt or the host's dpkg database) resolves
the metapackage, `apt-get download` fetches the .debs and `dpkg -x` unpacks
them into lab/vm/cache/kernels/<release>/root/.  The unpacked tree then
holds what the rest of the lab needs:

    root/boot/vmlinuz-<release>          what virtme-ng boots
    root/lib/modules/<release>/          its modules; virtme-ng finds them by
                                         walking up from the vmlinuz to the
                                         first directory holding lib/modules
    root/usr/src/linux-headers-<release> the KDIR to build camex.ko against
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

VM_DIR = Path(__file__).resolve().parent
CACHE = VM_DIR / "cache"
KEYRINGS = Path("/usr/share/keyrings")


@dataclasses.dataclass(frozen=True)
class Suite:
    """A set of Debian suites read together by one private apt config."""

    name: str
    sources: tuple[tuple[str, str, str], ...]  # (uri, suite, keyring file)
    default_release: str | None = None          # e.g. prefer backports


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """One entry of the matrix: a metapackage pair in one suite set."""

    name: str              # short name used on the command line: "6.1"
    suite: Suite
    image_meta: str        # metapackage naming the current image
    cc: str | None = None  # compiler override when Debian's is not on the host
    note: str = ""
    # Debian suite of a build chroot (lab/vm/chroot.py) for kernels whose
    # kbuild helpers and compiler need a newer libc than the host's.
    chroot: str | None = None


DEB = "http://deb.debian.org/debian"
SEC = "http://deb.debian.org/debian-security"

BOOKWORM = Suite("bookworm", (
    (DEB, "bookworm", "debian-archive-bookworm-stable.gpg"),
    (DEB, "bookworm-updates", "debian-archive-bookworm-automatic.gpg"),
    (SEC, "bookworm-security", "debian-archive-bookworm-security-automatic.gpg"),
))
BULLSEYE = Suite("bullseye", (
    (DEB, "bullseye", "debian-archive-bullseye-stable.gpg"),
    (SEC, "bullseye-security", "debian-archive-bullseye-security-automatic.gpg"),
))

TRIXIE_BPO = Suite("trixie-backports", (
    (DEB, "trixie", "debian-archive-trixie-stable.gpg"),
    (DEB, "trixie-backports", "debian-archive-trixie-automatic.gpg"),
    (SEC, "trixie-security", "debian-archive-trixie-security-automatic.gpg"),
), default_release="trixie-backports")

SID = Suite("sid", ((DEB, "sid", "debian-archive-keyring.gpg"),))

KERNELS: dict[str, KernelSpec] = {
    k.name: k for k in (
        KernelSpec("5.10", BULLSEYE, "linux-image-amd64", cc="gcc-12",
                   note="bullseye(-security); built with bookworm's gcc-12, "
                        "Debian built it with gcc-10"),
        KernelSpec("6.1", BOOKWORM, "linux-image-amd64",
                   note="bookworm / bookworm-security"),
        KernelSpec("6.12", BOOKWORM, "linux-image-6.12-amd64",
                   note="bookworm-security (the trixie kernel backported)"),
        KernelSpec("7.x", TRIXIE_BPO, "linux-image-amd64", chroot="trixie",
                   note="trixie-backports; built in a trixie chroot (gcc-14)"),
        KernelSpec("7.x-sid", SID, "linux-image-amd64", chroot="sid",
                   note="sid (unstable); built in a sid chroot with its gcc"),
    )
}

# What `make test` boots; `make kmatrix` boots every entry of KERNELS.
TEST_KERNELS = ("6.1", "6.12")


@dataclasses.dataclass
class KernelTree:
    """An unpacked kernel: everything the build and the boot need."""

    spec: str
    release: str           # uname -r of the kernel, e.g. 6.1.0-56-amd64
    version: str           # Debian package version
    root: Path

    @property
    def vmlinuz(self) -> Path:
        for path in (self.root / "boot" / f"vmlinuz-{self.release}",
                     self.root / "usr/lib/modules" / self.release / "vmlinuz",
                     self.root / "lib/modules" / self.release / "vmlinuz"):
            if path.exists():
                return path
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def kdir(self) -> Path:
        return self.root / "usr" / "src" / f"linux-headers-{self.release}"

    @property
    def moddir(self) -> Path:
        for base in ("lib", "usr/lib"):
            path = self.root / base / "modules" / self.release
            if path.is_dir():
                return path
        raise FileNotFoundError(f"no modules dir for {self.release} in {self.root}")


class PrivateApt:
    """apt-get/apt-cache bound to their own sources and lists under cache/.

    Nothing here reads or writes /etc/apt/sources.list* or the host's
    package lists, so adding bullseye or a newer suite cannot upgrade or
    otherwise change the host's packages.
    """

    def __init__(self, suite: Suite, base: Path = CACHE / "apt",
                 archs: tuple[str, ...] = ("amd64",)):
        self.suite = suite
        self.archs = archs
        self.dir = base / "-".join((suite.name, *archs[1:]))
        self.sources = self.dir / "sources.list"

    def _opts(self) -> list[str]:
        return [
            "-o", f"Dir::Etc::SourceList={self.sources}",
            "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::State::Lists={self.dir / 'lists'}",
            "-o", f"Dir::Cache={self.dir / 'cache'}",
            "-o", "Acquire::Languages=none",
            # sid's Release may be past Valid-Until on a lagging mirror.
            "-o", "Acquire::Check-Valid-Until=false",
            "-o", "APT::Architecture=amd64",
            *[a for arch in self.archs for a in ("-o", f"APT::Architectures::={arch}")],
            "-o", "APT::Sandbox::User=root",
            *(["-o", f"APT::Default-Release={self.suite.default_release}"]
              if self.suite.default_release else []),
            "-q",
        ]

    def update(self, max_age_s: float = 6 * 3600) -> None:
        """Refresh the private lists unless they are younger than max_age_s."""
        stamp = self.dir / "updated"
        if stamp.exists() and _age(stamp) < max_age_s:
            return
        (self.dir / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (self.dir / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        lines = [f"deb [signed-by={KEYRINGS / key}] {uri} {suite} main"
                 for uri, suite, key in self.suite.sources]
        self.sources.write_text("\n".join(lines) + "\n")
        subprocess.run(["apt-get", *self._opts(), "update"], check=True,
                       stdout=subprocess.DEVNULL)
        stamp.touch()

    def depends(self, pkg: str) -> list[str]:
        out = subprocess.run(["apt-cache", *self._opts(), "depends", pkg],
                             check=True, capture_output=True, text=True).stdout
        return re.findall(r"^\s+\|?Depends: <?([^\s<>]+)", out, re.M)

    def version(self, pkg: str) -> str:
        out = subprocess.run(["apt-cache", *self._opts(), "policy", pkg],
                             check=True, capture_output=True, text=True).stdout
        m = re.search(r"Candidate: (\S+)", out)
        if not m or m.group(1) == "(none)":
            raise LookupError(f"{pkg}: no candidate in {self.suite.name}")
        return m.group(1)

    def download(self, pkgs: list[str], dest: Path) -> list[Path]:
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", *self._opts(), "download", *pkgs],
                       check=True, cwd=dest, stdout=subprocess.DEVNULL)
        return sorted(dest.glob("*.deb"))


def _age(path: Path) -> float:
    return time.time() - path.stat().st_mtime


def resolve(spec: KernelSpec, apt: PrivateApt) -> tuple[str, list[str]]:
    """Return (release, packages to fetch) for the current kernel of spec."""
    images = [d for d in apt.depends(spec.image_meta)
              if d.startswith("linux-image-")]
    if not images:
        raise LookupError(f"{spec.image_meta}: depends on no linux-image")
    image = images[0]
    release = image[len("linux-image-"):].removesuffix("-unsigned")
    # Newer Debian kernels split the image into linux-binary-<rel> (the
    # vmlinuz), linux-modules-<rel> and linux-base-<rel>.
    parts = [d for d in apt.depends(image)
             if re.fullmatch(rf"linux-(binary|modules|base)-{re.escape(release)}", d)]
    headers = f"linux-headers-{release}"
    extra = [d for d in apt.depends(headers)
             if re.match(r"linux-(headers|kbuild)-", d)]
    return release, [image, *parts, headers, *extra]


def fetch(name: str, refresh: bool = False) -> KernelTree:
    """Download and unpack kernel `name` of the matrix (cached)."""
    spec = KERNELS[name]
    apt = PrivateApt(spec.suite)
    pointer = CACHE / "kernels" / f"{name}.json"
    if pointer.exists() and not refresh:
        meta = json.loads(pointer.read_text())
        tree = KernelTree(name, meta["release"], meta["version"], Path(meta["root"]))
        if tree.vmlinuz.exists() and tree.kdir.exists():
            return tree
    apt.update(max_age_s=0 if refresh else 6 * 3600)
    release, pkgs = resolve(spec, apt)
    version = apt.version(pkgs[0])
    base = CACHE / "kernels" / release
    root = base / "root"
    tree = KernelTree(name, release, version, root)
    if not (tree.vmlinuz.exists() and (base / "unpacked").exists()):
        shutil.rmtree(base, ignore_errors=True)
        debs = apt.download(pkgs, base / "debs")
        for deb in debs:
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
        _relocate(tree)
        shutil.rmtree(base / "debs")      # the unpacked tree is the cache
        (base / "unpacked").touch()
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(json.dumps({"release": release, "version": version,
                                   "root": str(root)}))
    return tree


def _relocate(tree: KernelTree) -> None:
    """Make the unpacked headers usable outside /usr/src.

    Debian's per-flavour headers Makefile includes the common tree by its
    absolute /usr/src path, and lib/modules/<rel>/{build,source} are
    absolute symlinks; point both into the unpacked root instead.
    """
    mk = tree.kdir / "Makefile"
    text = mk.read_text()
    for sep in (" ", "="):    # "include /usr/src/..." and "KBUILD_OUTPUT=/usr/src/..."
        text = text.replace(f"{sep}/usr/src/", f"{sep}{tree.root}/usr/src/")
    mk.write_text(text)
    for link in ("build", "source"):
        path = tree.moddir / link
        if path.is_symlink() and os.readlink(path).startswith("/"):
            target = tree.root / os.readlink(path).lstrip("/")
            path.unlink()
            path.symlink_to(os.path.relpath(target, path.parent))


def debian_cc(tree: KernelTree) -> str | None:
    """The compiler Debian built this kernel with (from .kernelvariables)."""
    kv = tree.kdir / ".kernelvariables"
    if kv.exists():
        m = re.search(r"\$\(CROSS_COMPILE\)(gcc-\d+)", kv.read_text())
        if m:
            return m.group(1)
    return None
