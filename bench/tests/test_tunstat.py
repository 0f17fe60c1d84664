"""bench.tunstat: super-packets told from a TUN's own counters."""

from bench import tunstat


def _c(tx_p, tx_b, rx_p, rx_b):
    return {"tx_packets": tx_p, "tx_bytes": tx_b, "rx_packets": rx_p, "rx_bytes": rx_b}


def test_the_senders_reads_above_the_mtu_are_super_packets():
    before = {"client": _c(10, 1000, 5, 500), "server": _c(5, 500, 10, 1000)}
    # c1 sends: its daemon read 100 packets of 6.2 MB (TSO super-packets),
    # the server's daemon wrote 3,000 packets of 1,400 bytes.
    after = {"client": _c(110, 6_201_000, 2_005, 104_500), "server": _c(2_005, 104_500, 3_010, 4_201_000)}
    d = tunstat.delta(before, after)
    assert d["client"] == _c(100, 6_200_000, 2_000, 104_000)
    s = tunstat.summary(d, {"client": {"tx-tcp-segmentation": True}}, 1420, reverse=False)
    assert s["sender"] == "client" and s["read_avg_bytes"] == 62_000 and s["super_packets"]
    assert s["write_avg_bytes"] == 1400 and s["sender_tso"] is True


def test_one_packet_per_read_never_averages_above_the_mtu():
    d = {"client": _c(0, 0, 3000, 4_200_000), "server": _c(3000, 4_200_000, 0, 0)}
    # iperf3 -R: the server side sends; its reads are 1,400 bytes each.
    s = tunstat.summary(d, {"server": {"tx-tcp-segmentation": False}}, 1420, reverse=True)
    assert s["sender"] == "server" and s["read_avg_bytes"] == 1400 and not s["super_packets"]
    assert s["write_avg_bytes"] == 1400 and s["sender_tso"] is False
    # exactly the MTU is still one packet per read
    s = tunstat.summary({"client": _c(10, 14_200, 0, 0)}, {}, 1420, reverse=False)
    assert s["read_avg_bytes"] == 1420 and not s["super_packets"]


def test_no_traffic_or_no_tun_claims_nothing():
    s = tunstat.summary({"client": _c(0, 0, 0, 0)}, {}, 1420, reverse=False)
    assert "super_packets" not in s and "read_avg_bytes" not in s and "write_avg_bytes" not in s
    assert "sender_tso" not in tunstat.summary({}, {}, 1420, reverse=False)
