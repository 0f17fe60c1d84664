"""What a daemon process loads at start: modules the data path never needs
cost resident memory in every daemon (issue: at most the encrypted floor's
+ 1 MiB). Each check runs in a fresh interpreter, as a daemon starts."""

from __future__ import annotations

import subprocess
import sys

# Modules neither daemon may load at start (with what they cost, measured
# with bench.memory's probe: RSS after import in a fresh interpreter).
NEVER = ("pyroute2",      # ~20 MiB: the netlink helper child imports it
         "shutil", "lzma", "bz2",    # argparse's help formatter, 0.6 MiB
         "dataclasses", "inspect",   # 1.2 MiB
         "hashlib", "tempfile", "random")  # OpenSSL's hashlib binding and friends


def _loaded(code: str) -> set:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_a_client_daemon_loads_no_json_and_nothing_of_the_never_list():
    mods = _loaded("from camex.daemon.options import parse_args\n"
                   "parse_args(['-M', 'client', '-s', '10.250.0.1', '-p', '7000', '-a'], environ={})\n"
                   "from camex.daemon.loop import harden_process\n"
                   "from camex.daemon.client import ClientDaemon\n"
                   "from camex.tunnel.client import AutoClientCore\n"
                   "from camex.v2 import core, kdf, lone")
    assert "camex.daemon.control" in mods
    assert "json" not in mods   # 0.1 MiB: loaded by the first control request
    assert "ctypes" not in mods  # 0.35-0.6 MiB: see the hardening tests below
    assert "camex.v2.server" not in mods   # 0.2 MiB: the server's half of v2
    assert not mods & set(NEVER), mods & set(NEVER)


def test_a_server_daemon_loads_nothing_of_the_never_list():
    mods = _loaded("from camex.daemon.options import parse_args\n"
                   "parse_args(['-M', 'server', '-p', '7000', '--protocol', 'v2', '-e', '-k', 'p' * 16],"
                   " environ={})\n"
                   "from camex.daemon.server import ServerDaemon\n"
                   "from camex.tunnel.server_v2 import V2Half\n"
                   "from camex.v2 import core, kdf, lone")
    assert "camex.daemon.server" in mods
    assert "camex.v2.client" not in mods   # the client's half of v2
    assert not mods & set(NEVER), mods & set(NEVER)


def test_the_control_socket_answers_json_in_a_daemon_that_had_not_loaded_it(tmp_path):
    # The daemon's side and `camex status`'s side, each in a process that
    # starts without json, as a daemon and the CLI do.
    path = tmp_path / "c.sock"
    code = (
        "import select, sys, threading\n"
        "from camex.daemon import control\n"
        "assert 'json' not in sys.modules\n"
        f"srv = control.ControlServer({str(path)!r}, {{'status': lambda: {{'rss_kib': 7, 'x': [1]}}}})\n"
        "out = []\n"
        f"t = threading.Thread(target=lambda: out.append(control.request({str(path)!r}, 'status')))\n"
        "t.start()\n"
        "assert select.select([srv.sock], [], [], 10)[0]\n"
        "srv.on_readable()\n"
        "t.join(); srv.close()\n"
        "print(out[0])\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "{'rss_kib': 7, 'x': [1]}"


_HARDENED = (
    "import sys\n"
    "from camex.cli import harden\n"
    "from camex.daemon.options import parse_args\n"
    "harden(parse_args({argv!r}, environ={{}}))\n"
    "print('ctypes' in sys.modules)\n"
    "import ctypes\n"
    "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))\n")   # PR_GET_DUMPABLE


def test_a_daemon_with_a_passphrase_is_made_undumpable_without_loading_ctypes():
    # ctypes stays resident for the daemon's lifetime (0.35-0.6 MiB) though
    # only this one prctl needs C; cryptography's cffi backend does it.
    argv = ["-M", "client", "-s", "10.250.0.1", "-p", "7000", "-a", "--protocol", "v2", "-k", "p" * 16]
    out = subprocess.run([sys.executable, "-c", _HARDENED.format(argv=argv)],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "0"]


def test_a_plaintext_daemon_is_made_undumpable_too():
    argv = ["-M", "server", "-p", "7000", "--protocol", "legacy"]
    out = subprocess.run([sys.executable, "-c", _HARDENED.format(argv=argv)],
                         capture_output=True, text=True, check=True)
    # No cryptography here: ctypes (loading cffi's backend for one call
    # would cost 1.3 MiB), and the flag is set all the same.
    assert out.stdout.split() == ["True", "0"]


def test_heap_trim_runs_once_per_quiet_spell_after_traffic():
    from camex.daemon.loop import HeapTrim
    calls = []
    trim = HeapTrim(every=10.0)
    trim._trim = calls.append
    trim.idle(100.0)            # start-up's garbage: trimmed on the first quiet wake-up
    trim.idle(101.0)            # nothing happened since: no call
    trim.dirty = True           # traffic (the loop sets this on a wake-up with events)
    trim.idle(105.0)            # too soon after the last one
    trim.idle(110.0)
    assert calls == [0, 0]


def test_heap_trim_gives_freed_heap_pages_back():
    # What a burst leaves: 64 KiB reads freed among live ones, free memory
    # that glibc does not return by itself (it trims only the heap's top).
    code = (
        "from camex.daemon.loop import HeapTrim\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS:'):\n"
        "            return int(line.split()[1])\n"
        "reads = [bytearray(65536) for _ in range(300)]\n"
        "live = reads[1::2]\n"
        "del reads\n"
        "before = rss()\n"
        "HeapTrim().idle(0.0)\n"
        "print(before - rss())\n")
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        # ~9.4 MiB freed in the middle of the heap: most of it comes back.
        assert int(out.stdout) > 6 * 1024, out.stdout
