"""cxserver, the benchmarks' C model of the deployed legacy server
(bench/cserver), serves what the deployed server serves: the C-client model
(lab/cclient.py) and a camex legacy client register with it and ping each
other through it (encrypted and plaintext, manual and auto); a 257th client
gets nothing; the four captures of the real C server, replayed against it,
get back what the real server sent, byte for byte in plaintext; flaws 1
and 4 show as clients see them; idle clients expire; SIGHUP re-reads the
database."""

import glob
import signal
import socket
import struct
import time

import pytest

from bench import cserver
from camex.dissect.capture import datagrams
from lab.attacks import icmp_echo
from lab.cclient import CClient
from lab.daemons import C2_PSK, GLOBAL_PSK, vectors_config
from lab.loadgen import LegacyLoad
from lab.netns import PORT, TUNNEL_C1, TUNNEL_C2, wait_until
from tests.support import spec_wire

pytestmark = pytest.mark.lab

CAPTURES = "tests/vectors/captures"


def start_cxserver(lab, camex, psk=None, config=None, log_level=None, env=None):
    path = camex.write_config(config if config is not None else vectors_config(), "cx.conf")
    proc = lab.server.spawn(cserver.argv(PORT, psk=psk, config=path, log_level=log_level),
                            name="cxserver", env=env)
    proc.wait_for_line(cserver.READY, timeout=10)
    lab.server.wait_port(PORT, "udp")
    return proc


def cclient(ns, psk, **kw):
    return CClient(lambda: ns.socket(socket.AF_INET, socket.SOCK_DGRAM), (ns.server_ip, PORT),
                   psk.encode() if psk else None, **kw).start()


def wait_reply(c, dst, ident, timeout=10.0):
    """Ping ``dst`` from C-client model ``c`` every 0.2 s until a reply is back."""
    n = [0]

    def check():
        if any(i == ident for i, _ in c.replies):
            return True
        n[0] += 1
        c.ping(dst, ident, n[0])
        return None
    wait_until(check, timeout, f"echo reply from {dst}", interval=0.2)


@pytest.mark.parametrize("psk", [GLOBAL_PSK, None], ids=["encrypted", "plaintext"])
def test_cclient_and_camex_manual_clients_ping_each_other(star, camex, psk):
    srv = start_cxserver(star, camex, psk)
    c1 = cclient(star.c1, psk, local_ip=TUNNEL_C1)
    try:
        camex.start_client(star.c2, encrypt=bool(psk), psk=psk)
        assert star.c2.wait_ping(TUNNEL_C1, timeout=15).ok     # camex -> C model
        wait_reply(c1, TUNNEL_C2, 0x4321)                       # C model -> camex
        assert not c1.dropped
        if psk:   # docs/LEGACY.md's example fingerprint
            assert srv.find(r"key fingerprint beeba85739952129851313a1f979fafc")
        # The deployed server's log: a line per relayed packet (flaw 8).
        assert srv.count(rf"{TUNNEL_C2} -> {TUNNEL_C1} \d+ bytes") >= 1
    finally:
        c1.stop()


@pytest.mark.parametrize("psk", [GLOBAL_PSK, None], ids=["encrypted", "plaintext"])
def test_cclient_and_camex_auto_clients_ping_each_other(star, camex, psk):
    """The captures' database; encrypted, C2 (camex) has its own psk.
    The C model comes first and sends a packet before camex registers:
    the deployed server files an auto client at 0.0.0.0 until its first
    DATA (flaw 4), so two auto clients registering back to back share one
    entry (test_two_auto_clients_before_any_data_share_one_entry)."""
    srv = start_cxserver(star, camex, psk)
    c1 = cclient(star.c1, psk, client_id="C1")
    try:
        wait_until(lambda: c1.address, 10, "C1's CONFIG")
        assert c1.address == TUNNEL_C1
        c1.ping(TUNNEL_C2, 1, 1)        # no C2 yet: dropped, but C1 is filed
        srv.wait_for_line(r"auto client C1 filed at 10\.0\.0\.2", timeout=5)
        camex.start_client(star.c2, auto=True, encrypt=bool(psk), psk=C2_PSK if psk else None)
        assert star.c2.wait_ping(TUNNEL_C1, timeout=15).ok
        wait_reply(c1, TUNNEL_C2, 0x1234)
    finally:
        c1.stop()


def test_two_auto_clients_before_any_data_share_one_entry(star, camex):
    """Flaw 4 as clients see it: C2's REGISTER lands on the entry C1 holds
    at 0.0.0.0, so C1's packets find no client until it registers again."""
    srv = start_cxserver(star, camex, GLOBAL_PSK)
    c1 = cclient(star.c1, GLOBAL_PSK, client_id="C1")
    c2 = None
    try:
        wait_until(lambda: c1.address, 10, "C1's CONFIG")
        c2 = cclient(star.c2, GLOBAL_PSK, client_id="C2")
        wait_until(lambda: c2.address, 10, "C2's CONFIG")
        mark = srv.mark()
        c1.ping(TUNNEL_C2, 2, 1)
        srv.wait_for_line(r"no client 10\.0\.0\.2", start=mark, timeout=5)
    finally:
        c1.stop()
        if c2 is not None:
            c2.stop()


def test_the_257th_client_is_not_served(star, camex):
    srv = start_cxserver(star, camex, GLOBAL_PSK, log_level="warning")
    load = LegacyLoad(star.c1, (star.c1.server_ip, PORT), 257, passphrase=GLOBAL_PSK.encode())
    try:
        first, last = load.clients[:256], load.clients[256]
        load.register_all(first)
        load.collect(0.3)
        load.register(last)
        srv.wait_for_line(r"client table full", timeout=5)
        # Registered clients still relay; nothing to or from the 257th.
        sent = [load.send_data(first[1], first[0], b"ok"),
                load.send_data(last, first[0], b"from 257"),
                load.send_data(first[2], last, b"to 257")]
        got = load.collect(1.0)
        assert got == {first[0].index: [sent[0]]}
    finally:
        load.close()


# ------------------------------------------------------------ the captures


def _capture(name):
    return [d for d in datagrams(f"{CAPTURES}/{name}") if d.complete]


def _plaintext(d_payload, keys):
    for k in keys:
        try:
            return spec_wire.open_frame(k, d_payload)
        except Exception:  # noqa: BLE001 - the other key
            continue
    raise AssertionError("no key opens a captured datagram")


@pytest.mark.parametrize("name", ["upstream-manual-plain.pcap", "upstream-manual-enc.pcap",
                                  "upstream-auto-plain.pcap", "upstream-auto-enc.pcap"])
def test_captures_replayed_get_what_the_c_server_sent(star, camex, name):
    """Each client's datagrams of a capture go to cxserver from its own
    socket in its own namespace (the captures' lab), in capture order;
    after each, what the C server sent in the capture must come back: the
    same plaintexts (CONFIGs and relayed packets), nothing else (no answer
    to a manual REGISTER or to the second one, no relay of the IPv6 router
    solicitation or of a packet for a client not yet there). Encrypted, the
    server seals each client's traffic under one prefix of its own, with
    that client's key, counter from 0."""
    enc = "-enc" in name
    keys = [spec_wire.key(GLOBAL_PSK), spec_wire.key(C2_PSK)]
    start_cxserver(star, camex, GLOBAL_PSK if enc else None)
    frames = _capture(name)
    # The capture stops after 150 frames: what the server answered to the
    # last datagrams is not in it, so those are not replayed.
    last_answer = max(d.index for d in frames if d.sport == PORT)
    frames = [d for d in frames if d.index <= last_answer]
    clients = {}     # captured client address -> (socket, its namespace's server address)
    for ns in star.clients:
        s = ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.connect((ns.server_ip, PORT))
        clients[ns.underlay] = s
    seen = {}        # client address -> [(prefix, seq)] of what cxserver sent
    replies = 0
    try:
        for d in frames:
            if d.dport == PORT:         # client -> server: replay it
                clients[d.src].send(d.payload)
                continue
            # The C server's answer to the datagram before: the same must come.
            s = clients[d.dst]
            got = s.recv(65535)
            if enc:
                want_pt = _plaintext(d.payload, keys)[3]
                k = keys[1] if name.startswith("upstream-auto") and d.dst == "10.250.1.2" else keys[0]
                ptype, prefix, seq, got_pt = spec_wire.open_frame(k, got)
                assert ptype == d.payload[4]
                seen.setdefault(d.dst, []).append((prefix, seq))
            else:
                want_pt, got_pt = d.payload, got
            assert got_pt == want_pt, f"frame {d.index}"
            replies += 1
        for s in clients.values():
            s.settimeout(0.3)
            with pytest.raises(socket.timeout):
                s.recv(65535)
    finally:
        for s in clients.values():
            s.close()
    assert replies >= 40
    for sent in seen.values():
        assert len({p for p, _ in sent}) == 1
        assert [q for _, q in sent] == list(range(len(sent)))


def test_a_replayed_data_moves_the_client_before_the_replay_check(star, camex):
    """Flaw 1, encrypted: a replay from elsewhere is dropped as a replay,
    yet the victim's traffic now goes to the replayer."""
    srv = start_cxserver(star, camex, GLOBAL_PSK)
    key = spec_wire.key(GLOBAL_PSK)
    socks = []
    for ns in star.clients:
        s = ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.connect((ns.server_ip, PORT))
        socks.append(s)
    a, b = socks
    try:
        for s, ip, prefix in ((a, TUNNEL_C1, b"AAAA"), (b, TUNNEL_C2, b"BBBB")):
            s.send(spec_wire.seal(key, spec_wire.REGISTER, prefix, 0,
                                  f"CX2P REGISTER MODE=MANUAL LOCAL_IP={ip}\n".encode()))
        srv.wait_for_line(rf"client {TUNNEL_C2} registered", timeout=5)
        data = spec_wire.seal(key, spec_wire.DATA, b"AAAA", 1, icmp_echo(TUNNEL_C1, TUNNEL_C2, 5, 1))
        a.send(data)
        assert spec_wire.open_frame(key, b.recv(65535))[3][16:20] == socket.inet_aton(TUNNEL_C2)
        b.send(data)                    # C1's datagram, replayed from C2's socket
        srv.wait_for_line(r"replayed packet", timeout=5)
        b.send(spec_wire.seal(key, spec_wire.DATA, b"BBBB", 1,
                              icmp_echo(TUNNEL_C2, TUNNEL_C1, 5, 2)))
        _, _, _, pt = spec_wire.open_frame(key, b.recv(65535))
        assert struct.unpack("!HH", pt[24:28]) == (5, 2)   # C1's traffic reached C2's socket
    finally:
        for s in socks:
            s.close()


def test_a_silent_client_expires_after_120_s_and_a_registering_one_stays(star, camex):
    """The idle expiry, under faketime at 20x (120 s in 6): B says nothing
    and is forgotten, A keeps sending REGISTERs and stays; B is served again
    after its next REGISTER."""
    lib = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    if not lib:
        pytest.fail("Debian's faketime is not installed (make deps installs it)")
    srv = start_cxserver(star, camex, env={"LD_PRELOAD": lib[0], "FAKETIME": "+0 x20"})
    socks = {}
    for ns, ip in ((star.c1, TUNNEL_C1), (star.c2, TUNNEL_C2)):
        s = ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.connect((ns.server_ip, PORT))
        socks[ip] = s
    a, b = socks[TUNNEL_C1], socks[TUNNEL_C2]

    def register(s, ip):
        s.send(f"CX2P REGISTER MODE=MANUAL LOCAL_IP={ip}\n".encode())

    try:
        register(a, TUNNEL_C1)
        register(b, TUNNEL_C2)
        srv.wait_for_line(rf"client {TUNNEL_C2} registered", timeout=5)
        a.send(icmp_echo(TUNNEL_C1, TUNNEL_C2, 9, 1))
        assert b.recv(65535) == icmp_echo(TUNNEL_C1, TUNNEL_C2, 9, 1)
        t0 = time.monotonic()

        def a_keeps_registering():
            register(a, TUNNEL_C1)    # every 0.5 s: 10 s of the server's clock
            return srv.find(rf"client {TUNNEL_C2} \(\S+\) expired")
        wait_until(a_keeps_registering, 20, "B's expiry", interval=0.5)
        assert time.monotonic() - t0 >= 120 / 20 * 0.8
        assert srv.find(rf"client {TUNNEL_C1} \(\S+\) expired") is None
        mark = srv.mark()
        a.send(icmp_echo(TUNNEL_C1, TUNNEL_C2, 9, 2))
        srv.wait_for_line(rf"no client for {TUNNEL_C2}", start=mark, timeout=5)
        register(b, TUNNEL_C2)
        srv.wait_for_line(rf"client {TUNNEL_C2} registered", start=mark, timeout=5)
        a.send(icmp_echo(TUNNEL_C1, TUNNEL_C2, 9, 3))
        assert b.recv(65535) == icmp_echo(TUNNEL_C1, TUNNEL_C2, 9, 3)
    finally:
        for s in socks.values():
            s.close()


def test_sighup_rereads_the_database(star, camex):
    """An auto client unknown to the file gets nothing; after the file
    gains its section and a SIGHUP, its next REGISTER gets its CONFIG."""
    srv = start_cxserver(star, camex, config="[defaults]\ngateway_ip=10.0.0.1\n")
    s = star.c1.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    s.connect((star.c1.server_ip, PORT))
    try:
        s.send(b"CX2P REGISTER MODE=AUTO CLIENT_ID=C7\n")
        srv.wait_for_line(r"unknown client ID C7", timeout=5)
        with pytest.raises(socket.timeout):
            s.recv(65535)
        camex.write_config("[defaults]\ngateway_ip=10.0.0.1\n\n[client c7]\nlocal_cidr=10.0.0.7/24\n",
                           "cx.conf")
        srv.signal(signal.SIGHUP)
        srv.wait_for_line(r"reloaded .*: 1 clients", timeout=5)
        s.send(b"CX2P REGISTER MODE=AUTO CLIENT_ID=C7\n")
        s.settimeout(5)
        assert s.recv(65535) == b"CX2P CONFIG CLIENT_ID=C7 LOCAL_CIDR=10.0.0.7/24 GATEWAY_IP=10.0.0.1\n"
    finally:
        s.close()
