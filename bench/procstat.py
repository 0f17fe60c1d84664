"""What /proc says about a process and about the machine.

The bench charges each tunnel with the CPU time of its own daemons
(utime+stime of /proc/PID/stat, all threads) and reports their peak resident
memory (VmHWM of /proc/PID/status, the kernel's high-water mark, so no
sampling can miss a peak). Machine-wide counters from /proc/stat tell how
busy the other tenants of a shared machine were while we measured.
"""

from __future__ import annotations

import os
from typing import Optional

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid: int) -> Optional[tuple]:
    """(utime, stime) of a live process in seconds (None if it is gone):
    the time in the process's own code and in the kernel on its behalf."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> Optional[float]:
    """utime+stime of a live process in seconds (None if it is gone)."""
    t = cpu_times(pid)
    return None if t is None else t[0] + t[1]


def status_kib(pid: int, key: str) -> Optional[int]:
    """A `kB` line of /proc/PID/status (VmHWM, VmRSS, ...) in KiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def peak_rss_kib(pid: int) -> Optional[int]:
    return status_kib(pid, "VmHWM")


def rss_kib(pid: int) -> Optional[int]:
    return status_kib(pid, "VmRSS")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent in user, nice and system mode.

    irq/softirq are left out on purpose: the packet work of our own tunnels
    lands there and is not attributed to any process.
    """
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system = (int(x) for x in fields[1:4])
    return (user + nice + system) / CLK_TCK


def machine_idle_seconds() -> float:
    """CPU seconds the whole machine spent idle (idle and iowait, all
    cores): what is left over when a run is bound by the CPU is near zero."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return (int(fields[4]) + int(fields[5])) / CLK_TCK


def own_cpu_seconds() -> float:
    """CPU of this process and of its reaped children (iperf3, ping, daemons)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system
