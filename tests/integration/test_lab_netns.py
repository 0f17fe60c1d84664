"""The lab itself (lab/netns.py): topologies come up as described, traffic
flows only where the veths go, processes run inside the right namespace with
their output captured, and the cleanup runs on exit, on SIGTERM, and (via
clean_stale) after the lab was SIGKILLed."""

import ipaddress
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from lab import netns as L

pytestmark = pytest.mark.lab

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (absent or a zombie awaiting reaping)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_star_topology_addresses_and_reachability(tmp_path):
    with L.StarTopology(logdir=str(tmp_path)) as lab:
        pid = os.getpid()
        assert lab.prefix == f"cx{pid}" or lab.prefix.startswith(f"cx{pid}k")
        assert [ns.name for ns in (lab.server, lab.c1, lab.c2)] == [f"{lab.prefix}-{r}" for r in ("srv", "c1", "c2")]
        names = set(L.lab_namespaces())
        assert {lab.server.name, lab.c1.name, lab.c2.name} <= names

        assert ipaddress.IPv4Interface("10.250.0.1/24") in lab.server.addresses("c1")
        assert ipaddress.IPv4Interface("10.250.1.1/24") in lab.server.addresses("c2")
        assert lab.c1.addresses("eth0") == [ipaddress.IPv4Interface("10.250.0.2/24")]
        assert lab.c2.addresses("eth0") == [ipaddress.IPv4Interface("10.250.1.2/24")]
        assert (lab.c1.tunnel_ip, lab.c2.tunnel_ip) == (L.TUNNEL_C1, L.TUNNEL_C2)
        links = lab.c1.links()
        assert links["eth0"]["up"] and links["lo"]["up"] and links["eth0"]["mtu"] == 1500

        # Each client reaches the server on its own veth ...
        assert lab.c1.wait_ping("10.250.0.1", timeout=5).ok
        assert lab.c2.wait_ping("10.250.1.1", timeout=5).ok
        r = lab.server.ping("10.250.0.2", count=3, interval=0.05)
        assert (r.transmitted, r.received) == (3, 3) and r.rtt_avg_ms is not None
        # ... loopback is up ...
        assert lab.c1.ping("127.0.0.1").ok
        # ... but the clients cannot reach each other except through camex.
        r = lab.c1.ping("10.250.1.2", count=1, wait=0.3)
        assert not r.ok and r.loss_pct == 100.0
        # Nothing leaked into the host namespace.
        assert lab.c1.link_of("10.250.0.2") == "eth0"
        assert not any(ifname in ("c1", "c2") for ifname in _host_links())
    assert not ({lab.server.name, lab.c1.name, lab.c2.name} & set(L.lab_namespaces()))


def _host_links():
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return [link.get("ifname") for link in ipr.get_links()]


def test_point_to_point(tmp_path):
    with L.PointToPoint(logdir=str(tmp_path), mtu=9000) as lab:
        assert lab.a.links()["eth0"]["mtu"] == 9000
        r = lab.a.ping("10.250.0.2", count=2, interval=0.05, size=8000)
        assert r.received == 2
        names = (lab.a.name, lab.b.name)
    assert not set(names) & set(L.lab_namespaces())


def test_spawned_process_runs_in_namespace_and_is_stopped(tmp_path):
    script = textwrap.dedent(
        """
        import socket, sys, time
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("10.250.1.2", 7777))
        print("bound", s.getsockname(), flush=True)
        print("to stderr", file=sys.stderr, flush=True)
        time.sleep(600)
        """
    )
    with L.StarTopology(logdir=str(tmp_path)) as lab:
        # Binding 10.250.1.2 only works inside c2: proof of the namespace.
        proc = lab.c2.spawn([sys.executable, "-c", script], name="binder")
        m = proc.wait_for_line(r"bound \('([\d.]+)', (\d+)\)", timeout=10)
        assert m.groups() == ("10.250.1.2", "7777")
        proc.wait_for_line("to stderr", timeout=5)
        lab.c2.wait_port(7777, "udp", timeout=5)
        assert 7777 not in lab.c1.bound_ports("udp")
        assert os.path.exists(proc.stdout_path) and os.path.exists(proc.stderr_path)
        assert proc.running()
        pid = proc.pid
    assert _gone(pid)
    assert "bound" in open(proc.stdout_path).read()


def test_process_that_exits_fails_the_wait_at_once(tmp_path):
    with L.StarTopology(logdir=str(tmp_path)) as lab:
        proc = lab.c1.spawn([sys.executable, "-c", "import sys; print('bye'); sys.exit(3)"])
        with pytest.raises(L.LabError, match="exited before printing"):
            proc.wait_for_line("never printed", timeout=30)
        assert proc.wait(5) == 3


def test_wait_timeout_names_the_condition(tmp_path):
    with L.StarTopology(logdir=str(tmp_path)) as lab:
        with pytest.raises(L.LabTimeout, match=r"ping .*c1 -> 10\.250\.1\.2"):
            lab.c1.wait_ping("10.250.1.2", timeout=1)


def test_run_captures_output_and_exit_code(tmp_path):
    with L.StarTopology(logdir=str(tmp_path)) as lab:
        res = lab.c1.run(["cat", "/proc/net/dev"])
        assert res.returncode == 0
        assert "eth0" in res.stdout and "c1:" not in res.stdout
        with pytest.raises(L.LabError, match="failed"):
            lab.c1.run(["false"], check=True)
        assert lab.server.sysctl("net.ipv4.ip_forward") in ("0", "1")


_LAB_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from lab.netns import StarTopology
    lab = StarTopology(logdir={logdir!r})
    child = lab.c1.spawn(["sleep", "600"])
    print(lab.server.name, lab.c1.name, lab.c2.name, child.pid, flush=True)
    time.sleep(600)
    """
)


def _wait_or_say_where(proc, timeout: float) -> int:
    """proc.wait(timeout); if it is still running then, fail with its
    Python stacks (py-spy, installed with the bench extras): a hang, or a
    signal that never reached the lab's handler, can be told apart."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
        where = subprocess.run([spy, "dump", "--pid", str(proc.pid)], capture_output=True,
                               text=True, timeout=30) if os.path.exists(spy) else None
        proc.kill()
        proc.wait()
        pytest.fail(f"the lab script did not exit within {timeout:g} s of the signal; "
                    f"its stacks then:\n{where.stdout + where.stderr if where else '(no py-spy)'}")


def _default_signals():
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _start_lab_script(tmp_path):
    script = _LAB_SCRIPT.format(repo=REPO, logdir=str(tmp_path))
    # SIGTERM and SIGHUP at their defaults in the script, whatever this
    # runner inherited: a lab leaves a signal its host program ignores
    # ignored (under `nohup make test`, SIGHUP), and so it should.
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            preexec_fn=_default_signals)
    line = proc.stdout.readline().split()
    assert len(line) == 4, "lab script did not start"
    names, child = line[:3], int(line[3])
    assert set(names) <= set(L.lab_namespaces())
    assert not _gone(child)
    return proc, names, child


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_tears_down_namespaces_and_processes(tmp_path, sig):
    proc, names, child = _start_lab_script(tmp_path)
    proc.send_signal(sig)
    assert _wait_or_say_where(proc, 15) == 128 + sig
    assert not set(names) & set(L.lab_namespaces())
    assert _gone(child)


def test_sigkilled_lab_leaves_stale_namespaces_that_clean_stale_removes(tmp_path):
    proc, names, child = _start_lab_script(tmp_path)
    proc.kill()
    proc.wait(15)
    # The child dies with the lab (PDEATHSIG) ...
    L.wait_until(lambda: _gone(child), 5, "child to die with the lab")
    # ... but nobody unmounted the namespaces: they are stale now (unless a
    # parallel worker's new lab swept them already, which is the same code).
    stale = set(names) & set(L.lab_namespaces())
    removed = L.clean_stale()
    assert stale <= set(removed)
    assert not set(names) & set(L.lab_namespaces())


def test_cleanup_kills_a_process_that_escaped_its_group(tmp_path):
    with L.StarTopology(logdir=str(tmp_path)) as lab:
        # setsid: the grandchild leaves the process group that stop() kills,
        # and PDEATHSIG is not inherited across fork.
        script = ("import subprocess, time; p = subprocess.Popen(['sleep', '600'], "
                  "start_new_session=True); print(p.pid, flush=True); time.sleep(600)")
        parent = lab.c1.spawn([sys.executable, "-c", script], name="escaper")
        escaped = int(parent.wait_for_line(r"^(\d+)$", timeout=10).group(1))
        assert not _gone(escaped)
        assert os.getpgid(escaped) != parent.pid
    assert _gone(escaped)
