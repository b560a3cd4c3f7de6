"""How many CPU cores a process may really use."""

from __future__ import annotations

import math
import os
from pathlib import Path


def available_cpus() -> int:
    """Cores this process may really use: affinity, narrowed by a cgroup CPU quota (docker --cpus)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus
