"""`camex status` and `camex reload`: talk to running daemons.

Like `wg show`: one block per daemon, one line per client with its ID,
tunnel address, endpoint, protocol, last registration, traffic and drops.
`--json` prints the daemons' answers as they are, `--prometheus` in the
Prometheus text format (camex.daemon.metrics).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

from .control import request

RUN_DIR = "/run/camex"


def _human(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def _ago(seconds) -> str:
    if seconds is None:
        return "never"
    return f"{seconds:.0f} s ago" if seconds >= 1 else "just now"


def _since(st: dict, c: dict) -> str:
    """When a client connected (its current entry, across moves to a new
    socket), and whether it came back from the server's state file."""
    secs = c.get("connected_for")
    if secs is None:
        return "-"
    wall = st.get("wall_time")
    at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall - secs)) if wall else None
    text = f"{at} ({secs:.0f} s)" if at else f"{secs:.0f} s ago"
    return text + (", restored from the state file" if c.get("restored") else "")


def format_status(path: str, st: dict) -> str:
    lines = []
    drops = ", ".join(f"{k} {v}" for k, v in sorted(st.get("drops", {}).items())) or "none"
    if st.get("mode") == "server":
        lines.append(f"server: port {st['port']} ({'encrypted' if st['encrypted'] else 'plaintext'}),"
                     f" {len(st['clients'])} client(s)   [{path}]")
        lines.append(f"  drops: {drops}")
        refused = ", ".join(f"{k} {v}" for k, v in
                            sorted(st.get("address_refusals", {}).items())) or "none"
        lines.append(f"  address refusals: {refused}")
        for c in sorted(st["clients"], key=lambda c: c["address"]):
            lines.append(f"  client {c['client_id'] or '-'}")
            addrs = " ".join(c.get("addresses") or [c["address"]])
            lines.append(f"    address: {addrs}   endpoint: {c['endpoint']}")
            cipher = f", {c['cipher']}" if c.get("cipher") else ""
            lines.append(f"    protocol: {c['protocol']} ({c['mode']}{cipher})   "
                         f"key: {c['key'] or 'none'}")
            lines.append(f"    connected since: {_since(st, c)}")
            lines.append(f"    registered: {_ago(c['registered_ago'])}   "
                         f"last datagram: {_ago(c['last_received_ago'])}")
            lines.append(f"    transfer: {_human(c['rx_bytes'])} received "
                         f"({c['rx_packets']} pkts), {_human(c['tx_bytes'])} sent "
                         f"({c['tx_packets']} pkts)")
    else:
        lines.append(f"client {st.get('client_id') or '-'}: interface {st.get('interface')} "
                     f"address {' '.join(str(a) for a in (st.get('address'), st.get('address6')) if a) or None} "
                     f"mtu {st.get('mtu')}   [{path}]")
        lines.append(f"  server: {st['server']} from port {st.get('local_port')}   "
                     f"protocol: {st['protocol']} "
                     f"({'encrypted' if st['encrypted'] else 'plaintext'}"
                     f"{', ' + st['cipher'] if st.get('cipher') else ''})")
        lines.append(f"  last datagram: {_ago(st.get('last_received_ago'))}   "
                     f"last register: {_ago(st.get('last_register_ago'))}")
        lines.append(f"  transfer: {_human(st['rx_bytes'])} received ({st['rx_packets']} pkts), "
                     f"{_human(st['tx_bytes'])} sent ({st['tx_packets']} pkts)")
        lines.append(f"  drops: {drops}")
    if st.get("process"):
        lines.append(_process_line(st["process"]))
    return "\n".join(lines)


def _process_line(p: dict) -> str:
    """Resident memory of the daemon and the peak of the helpers it forked
    (link set-up, scrypt), which are gone once done."""
    def mib(kib):
        return "-" if kib is None else f"{kib / 1024:.1f} MiB"
    helpers = ", ".join(f"{name} {h['runs']} run(s), peak {mib(h['peak_rss_kib'])}"
                        for name, h in sorted(p.get("helpers", {}).items())) or "none"
    return (f"  process: pid {p.get('pid')}, resident {mib(p.get('rss_kib'))} "
            f"(peak {mib(p.get('peak_rss_kib'))}); helpers: {helpers}")


def main(argv) -> int:
    cmd, argv = argv[0], argv[1:]
    p = argparse.ArgumentParser(prog=f"camex {cmd}")
    p.add_argument("--control-socket", metavar="PATH", action="append",
                   help=f"the daemon's socket, repeatable (default: every socket in {RUN_DIR})")
    if cmd == "status":
        form = p.add_mutually_exclusive_group()
        form.add_argument("--json", action="store_true", help="machine-readable output")
        form.add_argument("--prometheus", action="store_true",
                          help="the Prometheus text format (node_exporter's textfile "
                               "collector); a daemon that does not answer is camex_up 0")
        p.add_argument("-o", "--output", metavar="FILE",
                       help="write to FILE (through a temporary file in its directory, "
                            "renamed: a reader never sees half of it) instead of stdout")
    args = p.parse_args(argv)
    prometheus = cmd == "status" and args.prometheus
    paths = args.control_socket or sorted(glob.glob(f"{RUN_DIR}/*.sock"))
    if not paths:
        print(f"camex {cmd}: no running camex daemon (no socket in {RUN_DIR})", file=sys.stderr)
        if not prometheus:
            return 1
        # An empty exposition: the file of a timer then holds no stale numbers.
    results, rc = {}, 0
    for path in paths:
        try:
            results[path] = request(path, cmd)
        except PermissionError:
            print(f"camex {cmd}: {path}: permission denied (root only)", file=sys.stderr)
            rc = 1
        except (OSError, ValueError) as e:
            print(f"camex {cmd}: {path}: no answer ({e})", file=sys.stderr)
            if prometheus:
                # Exposed as camex_up 0; the file is still complete, so a
                # timer writing it succeeds and the alert comes from the metric.
                results[path] = None
            else:
                rc = 1
    if cmd == "status":
        if prometheus:
            from .metrics import render
            text = render(results, time.time())
        elif args.json:
            text = json.dumps(results, indent=2) + "\n"
        else:
            text = "\n\n".join(format_status(p, st) for p, st in results.items()) + "\n"
        if args.output:
            try:
                write_atomically(args.output, text)
            except OSError as e:
                print(f"camex {cmd}: --output: {args.output}: {e.strerror or e}", file=sys.stderr)
                return 1
        else:
            sys.stdout.write(text)
    else:
        for path, reply in results.items():
            print(f"{path}: {'reload requested' if reply.get('ok') else reply.get('error')}")
    return rc


def write_atomically(path: str, text: str) -> None:
    """Write `path` whole or not at all (mode 0644): a temporary file in the
    same directory, then rename(2) over it."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)   # whatever the umask: node_exporter runs as another user
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
