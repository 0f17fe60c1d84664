import json, statistics as st, sys
def load(names):
    runs = {}
    for n in names:
        d = json.load(open(f"/tmp/fp/{n}.json"))
        for e in d["entries"]:
            for r in e.get("runs", [e]):
                if r.get("status") != "ok": continue
                runs.setdefault(r["name"], []).append(r)
    return runs
B = load(sys.argv[1].split(",")); A = load(sys.argv[2].split(","))
def med(rs, f):
    v = [f(r) for r in rs]
    v = [x for x in v if x is not None]
    return st.median(v) if v else float("nan")
def role(rs, key):
    return med(rs, lambda r: r["tcp1"]["daemon_cpu_by_role"].get(key, 0) / (r["tcp1"]["received_bytes"] / 1e9) if key in r["tcp1"]["daemon_cpu_by_role"] else None)
print("| entry | n before/after | TCP1 Gbit/s before -> after | CPU s/GB (all daemons) | server s/GB | c1 s/GB | c2 s/GB | UDP 64 B rx kpps | CPU us per 64 B pkt |")
print("|---|---|---|---|---|---|---|---|---|")
for name in ["camex-relay-enc", "camex-relay-plain", "camex-p2p-enc", "camex-p2p-plain"]:
    b, a = B.get(name, []), A.get(name, [])
    g = lambda rs: med(rs, lambda r: r["tcp1"]["gbps"])
    c = lambda rs: med(rs, lambda r: r["tcp1"]["cpu_s_per_gb"])
    u = lambda rs: med(rs, lambda r: r["udp64"]["rx_pps"] / 1e3)
    p = lambda rs: med(rs, lambda r: r["udp64"]["cpu_us_per_packet"])
    print(f"| {name} | {len(b)}/{len(a)} | {g(b):.3f} -> {g(a):.3f} (x{g(a)/g(b):.2f}) | {c(b):.1f} -> {c(a):.1f} (x{c(b)/c(a):.2f} less) | "
          f"{role(b,'server'):.1f} -> {role(a,'server'):.1f} | {role(b,'client c1'):.1f} -> {role(a,'client c1'):.1f} | {role(b,'client c2'):.1f} -> {role(a,'client c2'):.1f} | "
          f"{u(b):.1f} -> {u(a):.1f} | {p(b):.1f} -> {p(a):.1f} |")
