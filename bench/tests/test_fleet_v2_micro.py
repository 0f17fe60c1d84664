"""bench.fleet_v2_micro: every round's datagrams reach the server's TUN
queue (a round that lost one raises), the sessions' cache builds nothing
once its senders are known, and a least-recently-used cache with fewer
places than senders builds an object for every datagram; --objects
reports a resident size per object for both ciphers."""

import re
import subprocess
import sys


def run(*args) -> str:
    return subprocess.run([sys.executable, "-m", "bench.fleet_v2_micro", *args],
                          capture_output=True, text=True, timeout=300, check=True).stdout


def test_rounds_with_the_sessions_cache_and_a_small_lru():
    out = run("--clients", "4", "--rounds", "2", "--versus-lru", "3")
    rounds = re.findall(r"^N=\s*4 round \d, (.+?): +([\d.]+) us/datagram, (\d+) AEAD objects built$",
                        out, re.M)
    assert len(rounds) == 4, out
    built = {}
    for name, us, n in rounds:
        assert float(us) > 0
        built.setdefault(name, []).append(int(n))
    # 4 clients in turn through 3 places: every datagram misses.
    assert built == {"tree's cache": [0, 0], "LRU of 3": [20000, 20000]}, out
    assert re.search(r"^N=\s*4 tree's cache: median +[\d.]+, least +[\d.]+ us/datagram$", out, re.M)


def test_objects_reports_both_ciphers():
    out = run("--objects", "1000")
    sizes = dict(re.findall(r"^1000 (\S+) objects: VmRSS \+\d+ KiB, (\d+) bytes each$", out, re.M))
    assert set(sizes) == {"chacha20-poly1305", "aes-256-gcm"}, out
    assert all(int(v) > 0 for v in sizes.values()), out
