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


# A role's start as camex.cli makes it (options, hardening, the daemon's
# module, its core), then the compile() calls seen and the modules loaded.
_ROLE = (
    "import builtins, sys\n"
    "compiled = []\n"
    "real = builtins.compile\n"
    # (importlib compiles a module's source with it where no .pyc is up to
    # date: an install byte-compiles, so those calls are not counted)
    "builtins.compile = lambda *a, **k: (str(a[1]).endswith('.py') or "
    "compiled.append(str(a[1]))) and 0 or real(*a, **k)\n"
    "import camex.cli\n"
    "from camex.daemon.options import parse_args\n"
    "opts = parse_args({argv!r}, environ={{}})\n"
    "camex.cli.harden(opts)\n"
    "from camex.io import netlink\n"
    "from camex.v2 import kdf\n"
    "if opts.mode == 'server':\n"
    "    import camex.daemon.config\n"   # (cli's _config_loader: the file's parser)
    "    from camex.daemon.server import ServerDaemon\n"
    "    ServerDaemon(opts, lambda: None)\n"
    "else:\n"
    "    from camex.daemon import client\n"
    "    client.make_core(opts, None, b'k' * 32 if opts.encrypt else None)\n"
    "{then}"
    "print(' '.join(compiled) or '-')\n"
    "print(' '.join(sys.modules))\n")


def _role(argv: list, then: str = "") -> tuple:
    """(what compile() compiled, the modules loaded) after a role's start
    (and the code `then`)."""
    out = subprocess.run([sys.executable, "-c", _ROLE.format(argv=argv, then=then)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    return out[0].split(), set(out[1].split())


V2_CLIENT = ["-M", "client", "-s", "10.250.0.1", "-p", "7000", "-l", "10.0.0.2/24",
             "--protocol", "v2", "-e", "-k", "p" * 16]
AUTO_CLIENT = ["-M", "client", "-s", "10.250.0.1", "-p", "7000", "-l", "10.0.0.2/24",
               "-e", "-k", "p" * 16]
SERVER = ["-M", "server", "-p", "7000", "-e", "-k", "p" * 16]


def test_a_v2_client_loads_neither_legacy_core_nor_the_config_file_parser():
    # Each stays resident for the daemon's lifetime (legacy server core,
    # legacy client core, the file parser with the address policy: together
    # ~0.25 MiB); a v2-only client uses none of them.
    _, mods = _role(V2_CLIENT)
    assert "camex.v2.client" in mods and "camex.daemon.client" in mods
    for m in ("camex.legacy.server", "camex.legacy.client", "camex.daemon.config",
              "camex.base.addrpolicy", "camex.v2.server", "camex.tunnel.server",
              "camex.tunnel.client"):   # (the auto client's fallback)
        assert m not in mods, m


def test_an_auto_client_loads_the_legacy_core_only_when_it_falls_back():
    _, mods = _role(AUTO_CLIENT)
    assert "camex.tunnel.client" in mods
    assert "camex.legacy.client" not in mods
    from camex.daemon.client import make_core
    from camex.daemon.options import parse_args
    core = make_core(parse_args(AUTO_CLIENT, environ={}), None, b"k" * 32)
    core.start(0.0)
    core.connected(0.0)
    core.on_timer(core.fallback_after + 1)    # no v2 answer: legacy from now on
    assert core.protocol == "legacy" and type(core.legacy).__name__ == "LegacyClient"


def test_a_server_does_not_load_the_legacy_client_core():
    _, mods = _role(SERVER)
    assert "camex.tunnel.server" in mods and "camex.legacy.server" in mods
    assert "camex.legacy.client" not in mods
    assert "camex.v2.client" not in mods


def test_a_server_that_speaks_both_loads_v2_only_for_a_v2_client():
    # A fleet of legacy cameras never needs the v2 half (~0.45 MiB of a
    # legacy relay's resident memory: the handshake, sessions, the v2
    # server core); a v2-only server loads it at start.
    v2_half = ("camex.tunnel.server_v2", "camex.v2.core", "camex.v2.server",
               "camex.v2.session", "camex.v2.noise")
    _, mods = _role(SERVER)
    assert not mods & set(v2_half), mods & set(v2_half)
    _, mods = _role(SERVER[:-3] + ["--protocol", "v2", "-e", "-k", "p" * 16])
    assert set(v2_half) <= mods


# What a server's run() makes of its socket next (camex.daemon.server): a
# recvmmsg/sendmmsg batch, here sending to itself and reading it back.
_BATCH = (
    "import socket\n"
    "from camex.daemon.server import MMSG_BATCH\n"
    "from camex.io import mmsg\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind(('127.0.0.1', 0))\n"
    "b = mmsg.Batch(s, MMSG_BATCH)\n"
    "b.send([(b'to myself', s.getsockname())] * 3)\n"
    "got = []\n"
    "while len(got) < 3:\n"
    "    got += [bytes(d) for d, _a, _s in b.recv()]\n"
    "assert got == [b'to myself'] * 3, got\n")


def test_an_encrypted_server_batches_datagrams_without_loading_ctypes():
    # ctypes stays resident for the daemon's lifetime (~0.45 MiB); every
    # server with a passphrase has cryptography's cffi backend loaded, and
    # camex.io.libc calls recvmmsg/sendmmsg through it.
    for argv in (SERVER, SERVER[:-3] + ["--protocol", "legacy", "-e", "-k", "p" * 16],
                 SERVER[:-3] + ["--protocol", "v2", "-e", "-k", "p" * 16]):
        _, mods = _role(argv, _BATCH)
        assert "_cffi_backend" in mods and "ctypes" not in mods, argv


def test_a_plaintext_server_batches_datagrams_through_ctypes_without_cffi():
    # No cryptography: loading cffi's backend for recvmmsg alone would cost
    # 1.3 MiB, ctypes less.
    _, mods = _role(["-M", "server", "-p", "7000", "--protocol", "legacy"], _BATCH)
    assert "ctypes" in mods and "_cffi_backend" not in mods


def test_no_role_calls_compile_at_start():
    # The first compile() of a process builds the compiler's AST types
    # (~0.3 MiB resident for good, which the encrypted floor never pays).
    # typing calls it for every string annotation of a NamedTuple class
    # (a module with `from __future__ import annotations`).
    for argv in (V2_CLIENT, AUTO_CLIENT, SERVER, ["-M", "server", "-p", "7000", "--protocol",
                                                  "legacy"]):
        compiled, _ = _role(argv)
        assert compiled == ["-"], (argv, compiled)


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
