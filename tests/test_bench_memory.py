"""experiments/bench_memory.py's peak meter reads a known allocation, and nothing when nothing is
allocated, with the kernel's counter and with the sampling fallback."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="the meter reads Linux's /proc/self/status"
)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "experiments" / "bench_memory.py"
    spec = importlib.util.spec_from_file_location("bench_memory", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_memory"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _allocate_and_free(mib: int, hold_s: float = 0.0) -> None:
    x = torch.ones(mib * 2**20 // 4)  # ones: the pages are touched, so they are resident
    time.sleep(hold_s)
    del x


@pytest.mark.parametrize("method", ["vmhwm", "sampled"])
def test_peak_meter_reads_a_freed_allocation_and_nothing(bench: ModuleType, method: str) -> None:
    if method == "vmhwm" and not bench.hwm_reset_works():
        pytest.skip("this kernel cannot reset VmHWM (the bench falls back to sampling)")
    meter = bench.PeakMeter("cpu", method=method)
    # First the allocation, then the empty region: a meter that did not reset its counter would
    # read the 200 MiB again in the second region.
    meter.start()
    _allocate_and_free(200, hold_s=0.05 if method == "sampled" else 0.0)
    peak = meter.stop()
    assert peak.method == method
    assert peak.above >= 190, peak
    assert peak.absolute == pytest.approx(peak.baseline + peak.above)
    meter.start()
    empty = meter.stop()
    assert empty.above < 20, empty


def test_unknown_method_is_an_error(bench: ModuleType) -> None:
    with pytest.raises(ValueError, match="'vmhwm', 'sampled' or None, got 'rss'"):
        bench.PeakMeter("cpu", method="rss")
