"""What a server's process tree costs, read from /proc (Linux): CPU time, resident memory, descriptors.

A server is its process and every descendant (uvicorn's or granian's workers, the model engine), so
each figure here covers the whole tree of a pid. Shared by the benchmark and the soak.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, utime + stime in clock ticks), for every process."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):  # the process ended meanwhile
            fields = stat.read_text().rsplit(")", 1)[1].split()
            table[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def process_tree(pid: int, table: dict[int, tuple[int, int]] | None = None) -> list[int]:
    """`pid` and all its descendants."""
    table = proc_table() if table is None else table
    tree = [pid]
    for parent in tree:  # grows while it is walked
        tree += [child for child, (ppid, _) in table.items() if ppid == parent]
    return tree


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by `pid` and all its descendants."""
    table = proc_table()
    return sum(table[p][1] for p in process_tree(pid, table) if p in table) / os.sysconf("SC_CLK_TCK")


def read_proc(pid: int, name: str) -> str:
    """The text of /proc/`pid`/`name`; "" once the process has ended."""
    try:
        return Path(f"/proc/{pid}/{name}").read_text(errors="replace")
    except OSError:
        return ""


def process_tree_rss(pid: int) -> tuple[float, float]:
    """Resident memory in MB of the largest process among `pid` and its descendants, and of them all."""
    sizes = [
        int(line.split()[1]) / 1024
        for p in process_tree(pid)
        for line in read_proc(p, "status").splitlines()
        if line.startswith("VmRSS:")
    ]
    return max(sizes, default=0.0), sum(sizes)


def open_descriptors(pid: int) -> int:
    """File descriptors open in `pid` and all its descendants."""
    count = 0
    for process in process_tree(pid):
        with contextlib.suppress(OSError):  # the process ended meanwhile
            count += len(os.listdir(f"/proc/{process}/fd"))
    return count
