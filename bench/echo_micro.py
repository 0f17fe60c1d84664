"""What an idle round trip costs: one echo's CPU, cold and warm.

    python -m bench.echo_micro [--rounds 300] [--gap 0.02]
    python -m bench.echo_micro --lab [--only camex-v2-p2p,naive-python-aead] [--pings 1000]

An idle tunnel's RTT is the CPU its daemons spend per echo (all of it on
the path: the request and the reply each cross a client and a server
process), and that CPU is spent after a sleep, with the caches of a VM
on shared cores gone cold.

Default (in memory, no lab): one echo through camex's v2 cores as the
daemons drive them (a client's TUN packet sealed, the server's flat
receive entered by `one`, its deadline asked, the reply from its TUN
sealed, the client's receive, its deadline asked), against the floor's
(`naive-python-aead`: two seals and two opens, nothing else). Each is
timed after a sleep of `--gap` (cold, the median of `--rounds`) and in a
tight loop (warm, the least of five timeit runs).

`--lab`: each bench entry in a fresh lab (bench/tunnels.py), `--pings`
pings 20 ms apart; per daemon the user and system CPU per ping
(/proc/PID/stat, 10 ms ticks: use 1,000 pings or more) and the median
RTT.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import statistics
import time
import timeit

_RTT = re.compile(r"time=([\d.]+) ms")


def memory_echoes():
    """{name: echo(now)}: camex's v2 cores and the floor's AEAD calls."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from camex.testing.memlab import ipv4

    from .lone_micro import ADDR as A1, pair

    srv, c1, now = pair()    # (an established session, as bench.lone_micro's)
    req = ipv4("10.0.0.2", "10.0.0.1", b"x" * 56)    # ping's 84-byte echo request
    rep = ipv4("10.0.0.1", "10.0.0.2", b"y" * 56)

    def camex(now):
        c1.tun_packet(req, now)
        srv.datagram_received.one(c1.to_net.pop(), A1, now)
        srv.to_tun.pop()
        srv.next_deadline()
        srv.tun_packet(rep, now)
        c1.datagram_received.one(srv.outbox.pop()[0], now)
        c1.to_tun.pop()
        c1.next_deadline()

    aead = ChaCha20Poly1305(os.urandom(32))
    counter = [0]

    def floor(now):
        for p in (req, rep):
            counter[0] += 1
            nonce = counter[0].to_bytes(12, "little")
            aead.decrypt(nonce, aead.encrypt(nonce, p, None), None)

    return {"camex v2 cores": camex, "floor (4 AEAD calls)": floor}, now


def run_memory(rounds: int, gap: float) -> None:
    echoes, now = memory_echoes()
    cold = {name: [] for name in echoes}
    for _ in range(rounds):
        for name, fn in echoes.items():    # interleaved: both see the same host
            time.sleep(gap)
            now += gap
            t0 = time.perf_counter_ns()
            fn(now)
            cold[name].append(time.perf_counter_ns() - t0)
    print(f"one echo, {rounds} rounds after a {gap * 1000:.0f} ms sleep (cold) and in a loop (warm)")
    for name, fn in echoes.items():
        warm = min(timeit.repeat(functools.partial(fn, now), number=20000, repeat=5)) / 20000
        c = statistics.median(cold[name]) / 1000
        print(f"  {name:22s} cold {c:7.1f} us   warm {warm * 1e6:6.2f} us   "
              f"cold/warm {c / (warm * 1e6):5.1f}")


def run_lab(names: list, pings: int) -> None:
    from bench.tunnels import BY_NAME
    from lab.netns import StarTopology

    def ticks(pid):
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return int(f[11]), int(f[12])

    hz = os.sysconf("SC_CLK_TCK")
    for name in names:
        with StarTopology(clients=2) as lab:
            up = BY_NAME[name].up(lab)
            time.sleep(0.5)
            before = {role: ticks(p.pid) for role, p in up.daemons}
            res = up.client.run(["ping", "-n", "-c", str(pings), "-i", "0.02", up.target],
                                timeout=pings * 0.05 + 30)
            after = {role: ticks(p.pid) for role, p in up.daemons}
        rtts = sorted(float(x) for x in _RTT.findall(res.stdout))
        parts = []
        for role in after:
            u, s = (1e6 * (after[role][i] - before[role][i]) / hz / pings for i in (0, 1))
            parts.append(f"{role.split()[0]} user {u:4.0f} sys {s:4.0f}")
        rtt = f"{statistics.median(rtts):.3f} ms" if rtts else "no replies"
        print(f"{name:22s} RTT median {rtt}; CPU us per ping: {'; '.join(parts)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--gap", type=float, default=0.02, help="seconds of sleep before a cold echo")
    ap.add_argument("--lab", action="store_true", help="per-daemon CPU per ping in the lab")
    ap.add_argument("--only", default="camex-v2-p2p,naive-python-aead")
    ap.add_argument("--pings", type=int, default=1000)
    args = ap.parse_args()
    if args.lab:
        run_lab(args.only.split(","), args.pings)
    else:
        run_memory(args.rounds, args.gap)


if __name__ == "__main__":
    main()
