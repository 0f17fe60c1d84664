"""Server restarts are invisible to the cameras: two models of the deployed
C client (lab/cclient.py: one replay window for life, 20 s reconnect),
a camex legacy client and a camex v2 client through ten restarts of the
server (SIGTERM, SIGKILL, stop-then-start, two of them with the new server's
wall clock an hour behind, under faketime). Traffic in both directions must
be back within 3 s of the new server listening, and the C models may drop
nothing as a replay after the first second. Then a server given a state file
from another host, another version, or with bytes flipped: it starts, says
what it ignored, and serves new clients."""

import glob
import os
import re
import signal
import socket
import threading
import time

import pytest

from camex.daemon import statefile
from lab import faults as F
from lab.cclient import CClient
from lab.daemons import GLOBAL_PSK, SERVER_READY, Camex, auto_config
from lab.netns import PORT, wait_until

pytestmark = pytest.mark.lab

RESUME_WITHIN = 3.0
CONF = auto_config({"C2": {"local_cidr": "10.0.0.3/24"}, "C3": {"local_cidr": "10.0.0.4/24"}})
# (restart kind, new server's clock an hour behind)
RESTARTS = [("sigterm", False), ("sigkill", False), ("stop-start", False), ("sigterm", True),
            ("sigkill", False), ("stop-start", False), ("sigkill", True), ("sigterm", False),
            ("stop-start", False), ("sigkill", False)]


def faketime_lib() -> str:
    found = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    if not found:
        pytest.fail("Debian's faketime is not installed (make deps installs it)")
    return found[0]


class Server:
    """The server process, restarted the ways an operator or a crash does."""

    def __init__(self, cx: Camex, encrypt: bool):
        self.cx, self.lab = cx, cx.lab
        conf = cx.write_config(CONF)
        # Plaintext legacy (no -e) still has a passphrase for v2.
        self.argv = cx.server_argv(encrypt=encrypt, psk=GLOBAL_PSK, config=conf)
        self.proc = None

    def start(self, behind: bool = False) -> float:
        env = None
        if behind:
            # Debian's faketime, its library preloaded straight into the
            # server (the `faketime` wrapper would stay the parent: a
            # SIGKILL would hit the wrapper, not the server).
            env = {"LD_PRELOAD": faketime_lib(), "FAKETIME": "-1h",
                   "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        self.proc = self.lab.server.spawn(self.argv, name="camex-server", env=env)
        self.proc.wait_for_line(SERVER_READY, timeout=15)
        return time.monotonic()

    def stop(self, kind: str) -> None:
        sig = signal.SIGKILL if kind == "sigkill" else signal.SIGTERM
        self.proc.signal(sig)
        rc = self.proc.wait(5)
        assert rc == (-9 if kind == "sigkill" else 0), self.proc.tail()
        if kind == "stop-start":
            time.sleep(1.0)  # systemd between stop and start; clients keep sending


class Prober:
    """Each C model pings a camex client 10 times a second (the camex
    client's kernel answers); replies are timed per request."""

    def __init__(self, pairs):
        self.pairs = pairs  # [(CClient, destination)]
        self.sent: dict = {}  # (ident, seq) -> send time
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        seq = 0
        while not self.stop.is_set():
            seq = (seq + 1) & 0xFFFF
            for i, (c, dst) in enumerate(self.pairs):
                self.sent[(0xC100 + i, seq)] = time.monotonic()
                c.ping(dst, 0xC100 + i, seq)
            time.sleep(0.1)

    def first_reply_after(self, i: int, t0: float):
        c = self.pairs[i][0]
        best = None
        for key, t in list(c.replies.items()):
            if key[0] == 0xC100 + i and self.sent.get(key, -1) >= t0:
                best = t if best is None else min(best, t)
        return best


def sock(ns):
    """What a C model calls for a new socket: a UDP socket in `ns`."""
    return lambda: ns.socket(socket.AF_INET, socket.SOCK_DGRAM)


def _fleet(lab, cx, encrypt):
    psk = GLOBAL_PSK.encode() if encrypt else None
    srv = Server(cx, encrypt)
    srv.start()
    c1 = CClient(sock(lab.clients[0]), (lab.clients[0].server_ip, PORT), psk,
                 local_ip="10.0.0.2").start()
    c2 = CClient(sock(lab.clients[1]), (lab.clients[1].server_ip, PORT), psk,
                 client_id="C2").start()
    ctl3, ctl4 = F.ctl_path(lab, "c3"), F.ctl_path(lab, "c4")
    leg = F.legacy(cx)
    legacy_kw = dict(encrypt=True, psk=GLOBAL_PSK) if encrypt else {}
    p3 = leg.start_client(lab.clients[2], auto=True, name="C3",
                          extra=["--control-socket", ctl3], **legacy_kw)
    p4 = Camex(lab, protocol="v2").start_client(
        lab.clients[3], local_cidr="10.0.0.5/24", psk=GLOBAL_PSK, encrypt=encrypt,
        extra=["--control-socket", ctl4])
    wait_until(lambda: c2.address == "10.0.0.3", 10, "C2's CONFIG")
    return srv, (c1, c2), (p3, p4), (ctl3, ctl4)


@pytest.mark.parametrize("encrypt", [True, False], ids=["enc", "plain"])
def test_ten_restarts_invisible_to_c_clients(star4, encrypt, measure):
    lab = star4
    cx = Camex(lab, protocol="legacy")
    srv, (c1, c2), (p3, p4), (ctl3, ctl4) = _fleet(lab, cx, encrypt)
    # C1 (manual) <-> the camex legacy client (auto), C2 (auto) <-> v2 (manual).
    prober = Prober([(c1, "10.0.0.4"), (c2, "10.0.0.5")])
    prober.thread.start()
    mode = "encrypted" if encrypt else "plaintext"
    try:
        t0 = time.monotonic()
        wait_until(lambda: prober.first_reply_after(0, t0) and prober.first_reply_after(1, t0),
                   15, "first replies")
        time.sleep(1.5)  # some traffic, some saves
        gaps = []
        for n, (kind, behind) in enumerate(RESTARTS, 1):
            srv.stop(kind)
            t_listen = srv.start(behind)
            wait_until(lambda t=t_listen: all(prober.first_reply_after(i, t) for i in (0, 1)),
                       15, f"traffic after restart {n} ({kind})")
            gap = max(prober.first_reply_after(i, t_listen) for i in (0, 1)) - t_listen
            gaps.append(gap)
            # Traffic flows for a while on this server (the next SIGKILL
            # then comes after saves, as in life).
            time.sleep(1.2)
            late = [t - t_listen for c in (c1, c2) for t in c.dropped if t > t_listen + 1.0]
            measure(f"server restart {n}/{len(RESTARTS)} ({mode}, {kind}"
                    f"{', clock 1 h behind' if behind else ''}): both directions of every "
                    f"client back {gap:.2f} s after the new server listened; C-model replay "
                    f"drops {len(c1.dropped) + len(c2.dropped)} in all")
            assert gap <= RESUME_WITHIN, f"restart {n} ({kind}): traffic back after {gap:.2f} s"
            assert not late, f"restart {n} ({kind}): the C client dropped server datagrams " \
                f"as replays {late} s after the new server listened"
        # No client lost: all four registered, none reconnected, all running.
        clients = F.server_clients(cx.control_socket(lab.server))
        assert sorted(c["address"] for c in clients) == \
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]
        legacy = [c for c in clients if c["protocol"] == "legacy"]
        assert all(c["restored"] for c in legacy), legacy
        assert all(c["connected_for"] > 10 for c in legacy), legacy
        assert c1.reconnects == [] and c2.reconnects == []
        assert p3.running() and p4.running()
        assert F.status(ctl3)["drops"].get("replay", 0) == 0
        measure(f"ten server restarts ({mode}): worst gap {max(gaps):.2f} s, "
                f"mean {sum(gaps) / len(gaps):.2f} s; C-model drops: "
                f"{len(c1.dropped) + len(c2.dropped)}")
        status_text = lab.server.run([cx.binary, "status", "--control-socket",
                                      cx.control_socket(lab.server)]).stdout
        assert "restored from the state file" in status_text
        assert "connected since:" in status_text
    finally:
        prober.stop.set()
        prober.thread.join(2)
        c1.stop()
        c2.stop()


def _rewrite(path, fn):
    """Edit the state file's JSON and fix its checksum (a deliberate edit)."""
    with open(path, "rb") as f:
        body = statefile.unseal(f.read())
    fn(body)
    with open(path, "wb") as f:
        f.write(statefile.seal(body))


def _flip(path):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    for i in range(len(data) // 3, len(data) // 3 + 4):
        data[i] ^= 0x5A
    with open(path, "wb") as f:
        f.write(bytes(data))


@pytest.mark.parametrize("damage,said", [
    ("another-host", r"ignored: written on another host"),
    ("another-version", r"ignored: written by another version"),
    ("bytes-flipped", r"ignored: (checksum mismatch|not readable)"),
    ("entry-edited", r"restored 0 legacy client\(s\), .*ignored 1 entry: client .*altered"),
])
def test_a_foreign_or_damaged_state_file_is_ignored(star, camex, damage, said):
    lab = star
    conf = camex.write_config(CONF)
    argv = camex.server_argv(encrypt=True, psk=GLOBAL_PSK, config=conf)
    srv = lab.server.spawn(argv, name="camex-server")
    srv.wait_for_line(SERVER_READY)
    psk = GLOBAL_PSK.encode()
    old = CClient(sock(lab.c1), (lab.c1.server_ip, PORT), psk, local_ip="10.0.0.2").start()
    try:
        srv.wait_for_line(r"client 10\.0\.0\.2 .* registered")
    finally:
        old.stop()
    srv.signal(signal.SIGTERM)
    assert srv.wait(5) == 0
    path = os.path.join(camex.state_dir(), f"server-{PORT}.json")
    assert os.stat(path).st_mode & 0o777 == 0o600
    if damage == "another-host":
        _rewrite(path, lambda b: b.update(host="a-host-elsewhere"))
    elif damage == "another-version":
        _rewrite(path, lambda b: b.update(version=99))
    elif damage == "bytes-flipped":
        _flip(path)
    else:
        def move(b):
            b["state"]["peers"][0]["ip"] = "10.0.0.9"
        _rewrite(path, move)
    srv2 = lab.server.spawn(argv, name="camex-server")
    srv2.wait_for_line(SERVER_READY)
    line = srv2.wait_for_line(r"state file .*").group(0)
    print(f"\n{damage}: {line}")
    assert re.search(said, line), line
    assert not F.server_clients(camex.control_socket(lab.server))
    # It serves new clients: a C model and a camex client, both ways.
    c = CClient(sock(lab.c1), (lab.c1.server_ip, PORT), psk, local_ip="10.0.0.2").start()
    try:
        camex.start_client(lab.c2, local_cidr="10.0.0.3/24", encrypt=True, psk=GLOBAL_PSK)

        def answered():
            c.ping("10.0.0.3", 0xD0, 1 + len(c.replies))
            return c.replies or None
        wait_until(answered, 10, "a reply through the new server", interval=0.2)
        assert srv2.running()
    finally:
        c.stop()
