"""bench.fetch (the newest wireguard-go of Debian's archive) without the
network: apt's answers parsed, apt refusing what is not Debian's, and a
failed fetch turning into one line and a "not available" bench row."""

import os
import time

import pytest

from bench import fetch, tunnels

POLICY = """\
wireguard-go:
  Installed: (none)
  Candidate: 0.0.20260522-1
  Version table:
     0.0.20260522-1 500
        500 http://deb.debian.org/debian sid/main amd64 Packages
     0.0.20231211-1+b9 500
        500 http://deb.debian.org/debian trixie/main amd64 Packages
"""


def test_the_candidate_and_its_suite_come_from_apt_cache_policy():
    assert fetch.parse_policy(POLICY) == ("0.0.20260522-1", "sid")
    # trixie ahead of sid (after a removal from sid), and two origins of one version
    trixie = ("wireguard-go:\n  Installed: (none)\n  Candidate: 0.0.20231211-1+b9\n"
              "  Version table:\n     0.0.20231211-1+b9 500\n"
              "        500 http://deb.debian.org/debian trixie/main amd64 Packages\n"
              "        500 http://deb.debian.org/debian sid/main amd64 Packages\n"
              "     0.0.20220316-1+b4 500\n"
              "        500 http://deb.debian.org/debian sid/main amd64 Packages\n")
    assert fetch.parse_policy(trixie) == ("0.0.20231211-1+b9", "trixie")
    with pytest.raises(fetch.FetchError, match="in none of the suites sid, trixie"):
        fetch.parse_policy("wireguard-go:\n  Installed: (none)\n  Candidate: (none)\n")
    with pytest.raises(fetch.FetchError):
        fetch.parse_policy("")


def test_the_version_wireguard_go_prints():
    out = ("wireguard-go v0.0.20250522\n\nUserspace WireGuard daemon for linux-amd64.\n"
           "Information available at https://www.wireguard.com.\n")
    assert fetch.parse_version_output(out) == "v0.0.20250522"
    assert fetch.parse_version_output("Usage: wireguard-go [-f/--foreground] INTERFACE") is None


def test_apt_failures_become_one_line():
    out = ("Err:1 http://deb.debian.org/debian sid InRelease\n"
           "  Temporary failure resolving 'deb.debian.org'\n"
           "W: Download is performed unsandboxed as root as file '/tmp/x' couldn't be accessed\n"
           "E: Failed to fetch http://deb.debian.org/debian/dists/sid/InRelease  "
           "Temporary failure resolving 'deb.debian.org'\n"
           "E: Some index files failed to download.\n")
    assert fetch.apt_error(out) == ("E: Failed to fetch http://deb.debian.org/debian/dists/sid/"
                                    "InRelease Temporary failure resolving 'deb.debian.org'")
    assert fetch.apt_error("Err:1 x sid InRelease\n  Connection refused\n").startswith("Err:1")
    assert fetch.apt_error("") == "no output"


def test_the_private_sources_are_signed_by_debians_keyring(tmp_path):
    opts = fetch._private_apt(str(tmp_path), "http://deb.debian.org/debian")
    sources = (tmp_path / "etc" / "sources.list").read_text()
    assert sources.splitlines() == [
        f"deb [signed-by={fetch.KEYRING}] http://deb.debian.org/debian {s} main"
        for s in fetch.SUITES]
    assert "trusted" not in sources
    # every place apt reads or writes is under the temporary directory
    dirs = [o.split("=", 1)[1] for o in opts if o.startswith("Dir::")]
    assert dirs and all(d.startswith(str(tmp_path)) for d in dirs)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMEX_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _unsigned_archive(root):
    """A file: archive with a Release file and no signature."""
    for suite in fetch.SUITES:
        d = root / "dists" / suite
        (d / "main" / "binary-amd64").mkdir(parents=True)
        (d / "main" / "binary-amd64" / "Packages").write_text("")
        (d / "Release").write_text(f"Suite: {suite}\nCodename: {suite}\nArchitectures: amd64\n"
                                   "Components: main\nSHA256:\n")
    os.chmod(root, 0o755)
    return f"file:{root}"


def test_an_archive_not_signed_by_debian_is_refused(tmp_path, cache):
    lines = []
    state = fetch.ensure(mirror=_unsigned_archive(tmp_path / "archive"), log=lines.append)
    assert len(lines) == 1
    assert "could not fetch wireguard-go from Debian sid/trixie" in lines[0]
    assert "is not signed" in lines[0] and "\n" not in lines[0]
    assert "binary" not in state and not list((cache / "wireguard-go").glob("0.*"))


def test_a_moved_archive_makes_the_row_not_available(tmp_path, cache):
    lines = []
    fetch.ensure(mirror=f"file:{tmp_path}/moved", log=lines.append)
    assert len(lines) == 1 and "does not have a Release file" in lines[0], lines
    with pytest.raises(fetch.FetchError, match="does not have a Release file"):
        fetch.fetched_binary()
    # The bench row: "not available" with that reason, before any lab is made.
    entry = tunnels.BY_NAME["wireguard-go-new"]
    with pytest.raises(tunnels.NotAvailable, match="could not fetch wireguard-go .*Release file"):
        entry.up(None)


def test_nothing_fetched_yet_says_how_to_fetch(cache):
    with pytest.raises(tunnels.NotAvailable, match="not fetched yet .*make bench-peers"):
        tunnels.BY_NAME["wireguard-go-new"].up(None)


def test_a_failed_recheck_keeps_the_cached_binary(tmp_path, cache):
    binary = cache / "wireguard-go" / "1.0-1" / "usr" / "bin" / "wireguard-go"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\necho wireguard-go v0.0.1\n")
    binary.chmod(0o755)
    fetch._write_state({"package": "wireguard-go", "debian_version": "1.0-1", "suite": "sid",
                        "binary": str(binary), "version": "v0.0.1", "checked": 0})
    lines = []
    state = fetch.ensure(mirror=f"file:{tmp_path}/moved", log=lines.append)
    assert len(lines) == 1 and lines[0].endswith("keeping the cached 1.0-1"), lines
    assert fetch.fetched_binary() == (str(binary), state)
    # A recent fetch is reused without asking the archive.
    fetch._write_state(dict(state, checked=time.time()))
    lines.clear()
    fetch.ensure(mirror=f"file:{tmp_path}/moved", log=lines.append)
    assert len(lines) == 1 and "cached in" in lines[0] and "could not" not in lines[0]
