"""Attacks on a camex server: the flaws of the legacy C server (docs/LEGACY.md
§8) replayed against camex, each of which must fail.

Lab: star3 — C1 and C2 are honest clients, C3 (10.250.2.2) is the attacker,
which sends from its own sockets and, with a raw socket, from forged source
addresses and ports. Datagrams are built with camex.legacy.codec (through
lab/attacks.py) or captured off the server's link to C1 and replayed.
"""

import time

import pytest

from lab import attacks as A
from lab import faults as F
from lab.daemons import C2_PSK, GLOBAL_PSK, vectors_config
from lab.netns import wait_until

pytestmark = pytest.mark.lab

PORT = 7000
SINK = 9999  # UDP port of the listener behind C2's tunnel address
ATTACKER = "10.250.2.2"


def _server(cx, lab, encrypt, config=None):
    sock = F.ctl_path(lab, "srv")
    extra = ["--control-socket", sock]
    if config:
        extra += ["-f", cx.write_config(config)]
    srv = cx.start_server(encrypt=encrypt, psk=GLOBAL_PSK if encrypt else None, extra=extra)
    return srv, sock


def _client(cx, ns, name, **kw):
    return cx.start_client(ns, extra=["--control-socket", F.ctl_path(ns.lab, name)], **kw)


def _endpoint(sock, address):
    entry = F.client_entry(sock, address)
    return entry["endpoint"] if entry else None


def _send_from_c1(lab, payload: bytes):
    s = A.ns_socket(lab.c1)
    try:
        s.sendto(payload, ("10.0.0.3", SINK))
    finally:
        s.close()


def _attacker_socket(lab):
    s = A.ns_socket(lab.clients[2], bind=(ATTACKER, 0))
    s.setblocking(False)
    return s


def test_spoofed_plaintext_data_does_not_hijack(star3, camex3):
    """Flaw 1, plaintext: the C server learns a client's endpoint from the
    inner source of any packet. Spoofed DATA claiming C1's tunnel address
    must neither be relayed nor move C1's entry."""
    lab, cx = star3, F.legacy(camex3)
    srv, ctl = _server(cx, lab, encrypt=False)
    _client(cx, lab.c1, "c1")
    _client(cx, lab.c2, "c2")
    lab.c1.wait_ping("10.0.0.3", timeout=10)
    c1_endpoint = _endpoint(ctl, "10.0.0.2")
    sink = F.UdpListener(lab.c2, "10.0.0.3", SINK)
    _send_from_c1(lab, b"honest-1")
    assert sink.drain(0.5) == [b"honest-1"], "control: the listener must see C1's own packet"

    def spoof(tag):
        return A.udp_packet("10.0.0.2", 1234, "10.0.0.3", SINK, tag)

    before = F.status(ctl)["drops"]
    att = _attacker_socket(lab)
    forger = A.Forger(lab.clients[2])
    # (a) from the attacker's own endpoint, (b) forged from C1's underlay
    # address with another port, (c) after registering an address of its own.
    att.sendto(spoof(b"spoof-a"), ("10.250.2.1", PORT))
    forger.send("10.250.0.2", 40000, "10.250.2.1", PORT, spoof(b"spoof-b"))
    att.sendto(b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.9\n", ("10.250.2.1", PORT))
    wait_until(lambda: F.client_entry(ctl, "10.0.0.9"), 5, "attacker's own registration")
    for i in range(20):
        att.sendto(spoof(b"spoof-c%d" % i), ("10.250.2.1", PORT))

    got = sink.drain(1.0)
    after = F.status(ctl)["drops"]
    print(f"\nspoofed plaintext DATA: 22 sent, {len(got)} relayed; drops before {before} after {after}")
    assert got == []
    assert _endpoint(ctl, "10.0.0.2") == c1_endpoint
    assert after.get("unknown-endpoint", 0) - before.get("unknown-endpoint", 0) >= 2
    assert after.get("spoofed-source", 0) - before.get("spoofed-source", 0) == 20
    # The honest clients still talk, in both directions.
    assert lab.c2.ping("10.0.0.2", count=3, interval=0.1).received == 3
    _send_from_c1(lab, b"honest-2")
    assert sink.drain(0.5) == [b"honest-2"]
    forger.close()
    att.close()
    sink.close()


def test_replayed_data_and_register_from_other_endpoints(star3, camex3):
    """Flaws 1 and 2, encrypted: a replayed DATA datagram from another
    endpoint must not move C1's entry; a replayed REGISTER must not reset
    the replay window, so replayed DATA after it is still rejected; and
    neither works when forged from C1's own endpoint."""
    lab, cx = star3, F.legacy(camex3)
    srv, ctl = _server(cx, lab, encrypt=True)
    with A.Sniffer(lab.server, "c1", PORT) as sniff:
        _client(cx, lab.c1, "c1", encrypt=True, psk=GLOBAL_PSK)
        _client(cx, lab.c2, "c2", encrypt=True, psk=GLOBAL_PSK)
        lab.c1.wait_ping("10.0.0.3", timeout=10)
        sink = F.UdpListener(lab.c2, "10.0.0.3", SINK)
        for i in range(3):
            # Apart, so that the client's UDP GSO does not coalesce them
            # into one super-packet on the capture.
            _send_from_c1(lab, b"honest-%d" % i)
            time.sleep(0.05)
        assert sorted(sink.drain(0.5)) == [b"honest-0", b"honest-1", b"honest-2"]
        time.sleep(0.2)
        from_c1 = sniff.matching(lambda p: p.src == "10.250.0.2" and p.dport == PORT)
    registers = [p for p in from_c1 if A.encrypted_type(p.payload) == 1]
    datas = [p for p in from_c1 if A.encrypted_type(p.payload) == 2]
    assert registers and len(datas) >= 3, \
        f"captured {len(registers)} REGISTER, {len(datas)} DATA of {len(sniff.packets)}: {sniff.packets[:6]}"
    c1_endpoint = _endpoint(ctl, "10.0.0.2")
    assert c1_endpoint == f"10.250.0.2:{registers[0].sport}"
    before = F.status(ctl)["drops"]

    att = _attacker_socket(lab)
    forger = A.Forger(lab.clients[2])
    c1_port = registers[0].sport
    sent = 0
    # 1. replayed DATA from the attacker's endpoint
    for p in datas:
        att.sendto(p.payload, ("10.250.2.1", PORT)); sent += 1
    # 2. replayed REGISTER, then replayed DATA, from the attacker's endpoint
    for r in registers:
        att.sendto(r.payload, ("10.250.2.1", PORT)); sent += 1
    for p in datas:
        att.sendto(p.payload, ("10.250.2.1", PORT)); sent += 1
    # 3. the same forged from C1's own address and port, and from C1's
    # address with another port
    for sport in (c1_port, c1_port ^ 1):
        for r in registers:
            forger.send("10.250.0.2", sport, "10.250.2.1", PORT, r.payload); sent += 1
        for p in datas:
            forger.send("10.250.0.2", sport, "10.250.2.1", PORT, p.payload); sent += 1

    got = sink.drain(1.0)
    answers = A.drain(att)
    st = F.status(ctl)
    after = st["drops"]
    print(f"\nreplays: {sent} datagrams replayed ({len(registers)} REGISTER, {len(datas)} DATA "
          f"each round), {len(got)} relayed, {len(answers)} answers to the attacker; "
          f"drops {dict(after)}")
    assert got == [], "a replayed datagram was relayed"
    assert answers == []
    assert _endpoint(ctl, "10.0.0.2") == c1_endpoint, "a replay moved C1's endpoint"
    assert sorted(c["address"] for c in st["clients"]) == ["10.0.0.2", "10.0.0.3"]
    # Every replayed datagram, from C1's own endpoint or any other, is judged
    # by C1's replay window (DATA from elsewhere could be C1 behind a new
    # NAT mapping: its sender prefix names C1) and counted as a replay.
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in ("replay", "unknown-endpoint")}
    assert delta == {"replay": 3 * len(registers) + 4 * len(datas),
                     "unknown-endpoint": 0}
    # C1 still works, and its next datagram is accepted.
    _send_from_c1(lab, b"honest-after")
    assert sink.drain(0.5) == [b"honest-after"]
    assert lab.c2.ping("10.0.0.2", count=3, interval=0.1).received == 3
    forger.close()
    att.close()
    sink.close()


def test_key_of_one_client_cannot_claim_another(star3, camex3):
    """Flaw 3: a key is valid only for the client ID or address it belongs
    to, and a key removed from the configuration stops working at reload,
    also for the entry it already made."""
    lab, cx = star3, F.legacy(camex3)
    conf_path = cx.write_config(vectors_config())
    ctl = F.ctl_path(lab, "srv")
    cx.start_server(encrypt=True, psk=GLOBAL_PSK, extra=["--control-socket", ctl, "-f", conf_path])
    _client(cx, lab.c1, "c1", auto=True, encrypt=True, psk=GLOBAL_PSK)
    c2 = _client(cx, lab.c2, "c2", auto=True, encrypt=True, psk=C2_PSK)
    lab.c1.wait_ping("10.0.0.3", timeout=10)
    endpoints = {a: _endpoint(ctl, a) for a in ("10.0.0.2", "10.0.0.3")}
    before = F.status(ctl)["drops"]

    att = _attacker_socket(lab)
    attempts = [
        # (passphrase the attacker holds, REGISTER it sends)
        (GLOBAL_PSK, b"CX2P REGISTER MODE=AUTO CLIENT_ID=C2\n"),
        (GLOBAL_PSK, b"CX2P REGISTER MODE=AUTO CLIENT_ID=c2\n"),
        (GLOBAL_PSK, b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.3\n"),
        (C2_PSK, b"CX2P REGISTER MODE=AUTO CLIENT_ID=C1\n"),
        (C2_PSK, b"CX2P REGISTER MODE=MANUAL LOCAL_IP=10.0.0.2\n"),
    ]
    for psk, msg in attempts:
        sealer = A.Sealer(psk.encode())
        att.sendto(sealer.seal(1, msg), ("10.250.2.1", PORT))
    answers = A.drain(att, 1.0)
    after = F.status(ctl)["drops"]
    refused = after.get("register-refused", 0) - before.get("register-refused", 0)
    print(f"\nkey misuse: {len(attempts)} REGISTERs with the wrong client's key, "
          f"{refused} refused, {len(answers)} answers")
    assert answers == []
    assert refused == len(attempts)
    assert {a: _endpoint(ctl, a) for a in endpoints} == endpoints
    assert lab.c2.ping("10.0.0.2", count=2, interval=0.1).received == 2

    # Revoke C2's passphrase: its entry goes at reload, and the old key
    # no longer registers anything.
    with open(conf_path, "w") as f:
        f.write(vectors_config(c2_psk="a-new-secret-for-c2"))
    r = lab.server.run([cx.binary, "reload", "--control-socket", ctl], check=True)
    assert "reload requested" in r.stdout
    wait_until(lambda: F.client_entry(ctl, "10.0.0.3") is None, 5, "C2's entry to go")
    old = A.Sealer(C2_PSK.encode())
    att.sendto(old.seal(1, b"CX2P REGISTER MODE=AUTO CLIENT_ID=C2\n"), ("10.250.2.1", PORT))
    assert A.drain(att, 0.5) == []
    assert F.client_entry(ctl, "10.0.0.3") is None
    assert F.client_entry(ctl, "10.0.0.2")["endpoint"] == endpoints["10.0.0.2"]
    assert not lab.c1.ping("10.0.0.3", count=2, interval=0.1, wait=0.5).ok
    assert c2.running()
    att.close()


@pytest.mark.parametrize("encrypt", [False, True], ids=["plaintext", "encrypted"])
def test_auto_clients_racing(star3, camex3, encrypt):
    """Flaw 4: two auto clients that start at the same instant both get
    their own entry and both work (the C server shared 0.0.0.0 for them)."""
    lab, cx = star3, F.legacy(camex3)
    _, ctl = _server(cx, lab, encrypt, config=vectors_config(c2_psk=None))
    kw = dict(auto=True, encrypt=encrypt, psk=GLOBAL_PSK if encrypt else None)
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        procs = [lab.c1.spawn(cx.client_argv(lab.c1, **kw), name="camex-client"),
                 lab.c2.spawn(cx.client_argv(lab.c2, **kw), name="camex-client")]
        for p in procs:
            cx.wait_client(p, timeout=15)
        lab.c1.wait_ping("10.0.0.3", timeout=5)
        times.append(time.monotonic() - t0)
        assert lab.c2.ping("10.0.0.2", count=2, interval=0.1).received == 2
        clients = F.server_clients(ctl)
        assert sorted((c["client_id"], c["address"]) for c in clients) == \
            [("C1", "10.0.0.2"), ("C2", "10.0.0.3")]
        assert len({c["endpoint"] for c in clients}) == 2
        for p in procs:
            p.stop()
        # Old entries stay (idle expiry); the next round must cope with them.
    print(f"\nracing auto clients ({'encrypted' if encrypt else 'plaintext'}): both up and "
          f"pinging after {', '.join(f'{t:.2f}' for t in times)} s")


@pytest.mark.parametrize("encrypt", [False, True], ids=["plaintext", "encrypted"])
@pytest.mark.parametrize("auto", [False, True], ids=["manual", "auto"])
def test_stale_entry_does_not_shadow_reconnected_client(star3, camex3, encrypt, auto):
    """Flaw 4: a client that comes back from a new port (killed and
    restarted: its old entry is still fresh on the server) works at once;
    the stale entry neither shadows it nor survives beside it."""
    lab, cx = star3, F.legacy(camex3)
    _, ctl = _server(cx, lab, encrypt, config=vectors_config(c2_psk=None))
    kw = dict(auto=auto, encrypt=encrypt, psk=GLOBAL_PSK if encrypt else None)
    c1 = _client(cx, lab.c1, "c1", **kw)
    _client(cx, lab.c2, "c2", **kw)
    lab.c2.wait_ping("10.0.0.2", timeout=10)
    old = _endpoint(ctl, "10.0.0.2")
    c1.signal(9)
    c1.wait(5)
    t0 = time.monotonic()
    c1b = _client(cx, lab.c1, "c1b", **kw)
    took = F.time_until_ping(lab.c2, "10.0.0.2", 10, t0)
    new = F.status(F.ctl_path(lab, "c1b"))["local_port"]
    entries = [c for c in F.server_clients(ctl) if c["address"] == "10.0.0.2"]
    print(f"\nreconnect from a new port ({'auto' if auto else 'manual'}, "
          f"{'encrypted' if encrypt else 'plaintext'}): {old} -> port {new}, "
          f"C2 reaches C1 again {took:.2f} s after the restart")
    assert [e["endpoint"] for e in entries] == [f"10.250.0.2:{new}"]
    assert old != entries[0]["endpoint"]
    assert c1b.running()
