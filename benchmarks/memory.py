"""Peak resident memory of one call, measured in a fresh process (Linux /proc).

A fresh process keeps earlier allocations of the benchmark out of the figure; inside it the peak
(VmHWM) is reset to the current resident size just before the call.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_growth_mib(run: Callable[[], object]) -> float:
    """Growth of this process's peak resident memory while ``run()`` runs, in MiB.

    Memory freed earlier is first handed back to the OS (glibc ``malloc_trim``): otherwise the
    call could reuse it without growing the resident set, and its own needs would go uncounted.
    """
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    run()
    return (_status_kib("VmHWM") - before) / 1024


def gpu_peak_growth_mib(run: Callable[[], object], device: str) -> float:
    """Growth of PyTorch's peak GPU allocation while ``run()`` runs, in MiB."""
    import torch  # only GPU measurements need it here

    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    run()
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def in_fresh_process(module: str, call: str):
    """The JSON result of ``module.call`` (a call expression, e.g. "f(1, 'a')") run in a new Python
    process started in the repository root, with ``benchmarks/`` importable."""
    code = f"import json, sys; sys.path.insert(0, 'benchmarks'); import {module}; "
    code += f"print(json.dumps({module}.{call}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
