"""`camex status --prometheus`: what the running daemons report on their
control sockets, in the Prometheus text exposition format (version 0.0.4),
for node_exporter's textfile collector or any scraper that reads a file.

The daemons serve no HTTP and import nothing for this: the CLI renders the
same answers `camex status --json` prints. Names follow Prometheus'
conventions: a `camex_` prefix, base units (bytes, seconds, Unix time in
`_timestamp_seconds`), `_total` on counters, HELP and TYPE once per family
with every sample of the family after them.

Every sample of a family has the same label names, as Prometheus' client
libraries require of a family (node_exporter 1.5 pads missing labels with
empty values; other readers refuse them). Labels:
`daemon` names the daemon by its control socket (`server-7000` for
/run/camex/server-7000.sock, the full path for a socket elsewhere). The
traffic of a server is per client (`client` = its client ID, empty for a
manual client without one; `address` = its tunnel address; `protocol`);
a client daemon has one such series, its own tunnel. Counts are of inner
packets and their bytes, as `camex status` shows them. The endpoint, mode
and key of a client are in `camex_client_info` only, so that a client
roaming to a new port does not start new traffic series.
"""

from __future__ import annotations

import math
import os

RUN_DIR = "/run/camex"

# name, type, help. Each family is written once, in this order.
FAMILIES = (
    ("camex_up", "gauge",
     "1 if the daemon answered on its control socket, 0 if its socket is there "
     "but nobody answers (a daemon that died without cleaning up)."),
    ("camex_daemon_info", "gauge",
     "The daemon's role, the protocols it speaks (a client: the one in use) and "
     "whether its traffic is encrypted (a server: its legacy protocol; v2 always is) "
     "(always 1)."),
    ("camex_clients", "gauge", "Clients registered on a server, by protocol."),
    ("camex_received_bytes_total", "counter",
     "Inner packet bytes received through the tunnel (server: from that client; "
     "client: from its server)."),
    ("camex_sent_bytes_total", "counter",
     "Inner packet bytes sent through the tunnel (server: to that client; "
     "client: to its server)."),
    ("camex_received_packets_total", "counter", "Inner packets received through the tunnel."),
    ("camex_sent_packets_total", "counter", "Inner packets sent through the tunnel."),
    ("camex_last_handshake_timestamp_seconds", "gauge",
     "Unix time of the last v2 handshake (the session in use) or the last legacy "
     "REGISTER."),
    ("camex_last_received_timestamp_seconds", "gauge",
     "Unix time of the last datagram received from the peer."),
    ("camex_client_info", "gauge",
     "A client's endpoint (address:port it sends from), mode and key (always 1)."),
    ("camex_drops_total", "counter", "Datagrams or packets dropped, by reason."),
    ("camex_handshakes_total", "counter",
     "v2 handshakes completed (server: with any client; client: with its server)."),
    ("camex_cookies_sent_total", "counter",
     "v2 cookie replies a server sent instead of a handshake, under load."),
    ("camex_process_resident_memory_bytes", "gauge", "Resident memory of the daemon (VmRSS)."),
    ("camex_process_resident_memory_peak_bytes", "gauge",
     "Peak resident memory of the daemon (VmHWM), its short-lived helpers not included."),
)


def escape_label(value) -> str:
    """A label value as the text format writes it: backslash, double quote
    and line feed escaped, everything else as it is (UTF-8)."""
    return (str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def daemon_name(path: str) -> str:
    """The `daemon` label of a control socket: the file name without
    `.sock` in /run/camex, else the whole path (no two daemons alike)."""
    if os.path.dirname(path) == RUN_DIR and path.endswith(".sock"):
        return os.path.basename(path)[:-5]
    return path


def _address(text) -> str:
    return "" if not text else str(text).split("/")[0]


class _Samples:
    def __init__(self):
        self.by_family: dict[str, list[str]] = {name: [] for name, _, _ in FAMILIES}

    def add(self, family: str, labels: dict, value) -> None:
        if value is None:
            return   # not applicable (e.g. handshakes of a legacy-only daemon)
        text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
        self.by_family[family].append(f"{family}{{{text}}} {_number(value)}")


def render(results: dict, now: float) -> str:
    """The exposition text for {socket path: status dict, or None if the
    daemon did not answer}; `now` is the Unix time the answers came in
    (ages become timestamps against it)."""
    out = _Samples()
    for path, st in results.items():
        d = {"daemon": daemon_name(path)}
        out.add("camex_up", d, 0 if st is None else 1)
        if st is None:
            continue
        if st.get("mode") == "server":
            _server(out, d, st, now)
        else:
            _client(out, d, st, now)
        for reason, n in sorted(st.get("drops", {}).items()):
            out.add("camex_drops_total", {**d, "reason": reason}, n)
        proc = st.get("process") or {}
        for family, key in (("camex_process_resident_memory_bytes", "rss_kib"),
                            ("camex_process_resident_memory_peak_bytes", "peak_rss_kib")):
            if proc.get(key) is not None:
                out.add(family, d, proc[key] * 1024)
    lines = []
    for name, kind, help_text in FAMILIES:
        samples = out.by_family[name]
        if samples:
            lines.append(f"# HELP {name} {_escape_help(help_text)}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(samples)
    return "".join(line + "\n" for line in lines)


def _traffic(out: _Samples, labels: dict, st: dict) -> None:
    out.add("camex_received_bytes_total", labels, st.get("rx_bytes"))
    out.add("camex_sent_bytes_total", labels, st.get("tx_bytes"))
    out.add("camex_received_packets_total", labels, st.get("rx_packets"))
    out.add("camex_sent_packets_total", labels, st.get("tx_packets"))


def _at(now: float, ago):
    return None if ago is None else round(now - ago, 3)


def _server(out: _Samples, d: dict, st: dict, now: float) -> None:
    protocols = st.get("protocols") or []
    out.add("camex_daemon_info", {**d, "role": "server", "protocols": ",".join(protocols),
                                  "encrypted": str(bool(st.get("encrypted"))).lower()}, 1)
    clients = st.get("clients", [])
    for proto in protocols:
        out.add("camex_clients", {**d, "protocol": proto},
                sum(1 for c in clients if c.get("protocol") == proto))
    for c in sorted(clients, key=lambda c: c.get("address") or ""):
        proto = c.get("protocol", "")
        labels = {**d, "client": c.get("client_id") or "", "address": _address(c.get("address")),
                  "protocol": proto}
        _traffic(out, labels, c)
        last = c.get("session_age") if proto == "v2" else \
            c.get("last_register_ago", c.get("registered_ago"))
        out.add("camex_last_handshake_timestamp_seconds", labels, _at(now, last))
        out.add("camex_last_received_timestamp_seconds", labels,
                _at(now, c.get("last_received_ago")))
        out.add("camex_client_info", {**labels, "mode": c.get("mode") or "",
                                      "key": c.get("key") or "none",
                                      "endpoint": c.get("endpoint") or ""}, 1)
    out.add("camex_handshakes_total", d, st.get("v2_handshakes"))
    out.add("camex_cookies_sent_total", d, st.get("v2_cookies_sent"))


def _client(out: _Samples, d: dict, st: dict, now: float) -> None:
    proto = st.get("protocol") or ""
    out.add("camex_daemon_info", {**d, "role": "client", "protocols": proto,
                                  "encrypted": str(bool(st.get("encrypted"))).lower()}, 1)
    labels = {**d, "client": st.get("client_id") or "", "address": _address(st.get("address")),
              "protocol": proto}
    _traffic(out, labels, st)
    last = st.get("last_handshake_ago") if proto == "v2" else st.get("last_register_ago")
    out.add("camex_last_handshake_timestamp_seconds", labels, _at(now, last))
    out.add("camex_last_received_timestamp_seconds", labels,
            _at(now, st.get("last_received_ago")))
    out.add("camex_handshakes_total", d, st.get("handshakes"))
