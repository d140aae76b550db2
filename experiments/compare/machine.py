"""What the comparison ran on and what it cost the machine: CPU model, wall and CPU time, load."""

from __future__ import annotations

import os
import platform
import resource
import threading
import time


def cpu_model() -> str:
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_seconds() -> float:
    """CPU time of this process and of its finished, waited-for children (the spawned run workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class LoadMonitor:
    """Samples the 1-minute load average every ``every`` seconds in a daemon thread while running,
    so the report can say how idle the machine was (a loaded machine slows every run's wall time)."""

    def __init__(self, every: float = 30.0) -> None:
        self.every, self.samples = every, [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.began, self.cpu_began = time.perf_counter(), cpu_seconds()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> "LoadMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        return {"wall_seconds": time.perf_counter() - self.began, "cpu_seconds": cpu_seconds() - self.cpu_began,
                "load_start": self.samples[0], "load_mean": sum(self.samples) / len(self.samples), "load_max": max(self.samples), "load_end": self.samples[-1]}
