"""Wall time per named phase of a step (``PhaseTimer``; its times are the ``time/<phase>`` metrics) and peak
memory."""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterator


class PhaseTimer:
    """Wall time per named phase of a step; on the GPU each phase ends with a synchronize so the time is
    the phase's own and not that of kernels queued before it."""

    def __init__(self, device: str):
        self.device = str(device)
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.device.startswith("cuda"):
                import torch

                torch.cuda.synchronize()
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0

    def metrics(self) -> dict[str, float]:
        return {f"time/{k}": v for k, v in self.times.items()}


def reset_peak_memory(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb(device: str) -> float:
    """Peak accelerator memory on the GPU; peak resident memory of this process on the CPU (never resets)."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB
