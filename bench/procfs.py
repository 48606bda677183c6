"""What the kernel says a process costs: PSS from /proc/PID/smaps_rollup (forked processes
share pages; PSS splits a shared page among its users, so PSS adds up across processes), CPU
time from /proc/PID/stat, and the machine's busy time from /proc/stat."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

_TICKS = os.sysconf("SC_CLK_TCK")


def pss_mb(pid: int) -> float | None:
    """The process's proportional set size in MB, or None once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def tree_pss_mb(pid: int) -> float:
    """PSS of a process and all its descendants (Postgres: the postmaster and its backends)."""
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    return sum(pss_mb(p.pid) or 0.0 for p in procs)


def cpu_s(pid: int) -> float | None:
    """User plus system CPU seconds the process has used (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process, its live descendants and the children it has reaped."""
    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in root.children(recursive=True):
            try:
                t = child.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                continue
    except psutil.NoSuchProcess:
        return 0.0
    return total


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / _TICKS, total / _TICKS


def available_mb() -> float:
    """MemAvailable: what the machine can still give without swapping."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0
