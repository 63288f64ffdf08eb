"""The exact heap meter and its rule: a fake mallinfo2 for the meter, synthetic heap curves for
the per-pass rule and its detection floor."""

from __future__ import annotations

import ctypes
import random
import tracemalloc

import pytest

from bisector.judge.signals import FLAT, GROWS, HEAP_ALLOCATION, UNSURE, heap_signal
from bisector.judge.verdict import CLEAN, LEAK, judge
from bisector.model.curve import MemoryCurve, Sample
from bisector.probe import meters as meters_mod
from bisector.probe.meters import Meters

KB = 1024.0


def test_meter_reads_the_heap_after_a_collection_and_a_trim() -> None:
    calls: list[str] = []
    heap = iter([1_000_000, 1_098_320])

    def fake_heap() -> int:
        calls.append("heap")
        return next(heap)

    def fake_trim(pad: int) -> int:
        calls.append("trim")
        return 1

    m = Meters(heap=fake_heap)
    m._trim = fake_trim
    first, second = m.sample(), m.sample()
    assert second["heap"] - first["heap"] == 98_320
    assert calls == ["trim", "heap", "trim", "heap"]  # trimmed before every reading
    assert m.heap_source == "mallinfo2"


def test_meter_subtracts_tracemallocs_own_bookkeeping() -> None:
    m = Meters(heap=lambda: 5_000_000)
    tracemalloc.start(1)
    try:
        own = tracemalloc.get_tracemalloc_memory()
        assert m.sample()["heap"] == pytest.approx(5_000_000 - own, abs=4096)
    finally:
        tracemalloc.stop()


def test_without_mallinfo2_the_heap_is_not_read(monkeypatch) -> None:
    class NoMallinfo:
        def __init__(self, name: str) -> None: ...

        def __getattr__(self, name: str):
            raise AttributeError(name)

    monkeypatch.setattr(meters_mod.ctypes, "CDLL", NoMallinfo)
    assert meters_mod._mallinfo2() is None
    m = Meters()
    assert m.heap_source is None and "heap" not in m.sample()


def test_real_mallinfo2_sees_a_ctypes_malloc_to_the_byte() -> None:
    heap = meters_mod._mallinfo2()
    if heap is None:
        pytest.skip("this C library has no mallinfo2 (not glibc >= 2.33): the RSS fallback is tested above")
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = heap()
    ptr = libc.malloc(96 * 1024)
    grown = heap() - before
    libc.free(ptr)
    assert 96 * 1024 <= grown <= 96 * 1024 + 64  # the chunk and its header


# ---------------------------------------------------------------------------------------------
# The per-pass rule


def series(deltas: list[float], start: float = 50e6) -> list[float]:
    y = [start]
    for d in deltas:
        y.append(y[-1] + d)
    return y


def test_every_call_leak_of_8kb_grows_with_a_floor_of_one_allocation_a_pass() -> None:
    s = heap_signal(series([8 * KB] * 16), series([0.0] * 16), pass_len=4)
    assert s.state == GROWS and s.rate == pytest.approx(8 * KB) and s.floor == HEAP_ALLOCATION / 4


def test_a_floor_below_2kb_comes_from_the_spread_alone() -> None:
    # 1 KB a call with ~100 B of jitter a pass: a leak, at a floor far below the old 2 KB minimum.
    jitter = [96.0, -64.0, 32.0, 0.0, -96.0, 64.0, -32.0, 16.0] * 4
    d = [KB + (jitter[i // 4] if i % 4 == 0 else 0.0) for i in range(32)]
    control = [0.0 if i % 4 else jitter[-1 - i // 4] for i in range(32)]
    s = heap_signal(series(d), series(control), pass_len=4)
    assert s.state == GROWS and s.rate == pytest.approx(KB, rel=0.1)
    assert s.floor < 200 and 0 < s.error < s.floor
    # More passes of the same spread: a lower floor (the standard error of a median).
    longer = heap_signal(series(d * 4), series(control * 4), pass_len=4)
    assert longer.floor < s.floor * 0.6


def test_growth_whose_interval_stays_under_the_target_is_no_leak_of_that_size() -> None:
    jitter = [96.0, -64.0, 32.0, 0.0, -96.0, 64.0, -32.0, 16.0] * 4
    control = [0.0 if i % 4 else jitter[-1 - i // 4] for i in range(32)]

    def every_call(per_call: float) -> list[float]:
        return [per_call + (jitter[i // 4] if i % 4 == 0 else 0.0) for i in range(32)]

    small = heap_signal(series(every_call(200.0)), series(control), pass_len=4, target=512.0)
    assert small.state == FLAT and small.under_target == 512.0
    # Stated with its upper bound as the floor: nothing above it, and it is under the target.
    assert small.floor == pytest.approx(small.rate + small.error) and small.floor < 512
    assert heap_signal(series(every_call(200.0)), series(control), pass_len=4).state == GROWS
    assert heap_signal(series(every_call(640.0)), series(control), pass_len=4, target=512.0).state == GROWS


def test_a_one_off_allocation_is_not_a_leak() -> None:
    d = [0.0] * 16
    d[9] = 300 * KB  # a cache made once, in the third pass
    assert heap_signal(series(d), series([0.0] * 16), pass_len=4).state == FLAT


def test_a_leak_on_every_other_call_grows_in_every_pass() -> None:
    d = [96 * KB if i % 2 else 0.0 for i in range(16)]
    s = heap_signal(series(d), series([0.0] * 16), pass_len=4)
    assert s.state == GROWS and s.rate == pytest.approx(48 * KB)


def test_the_controls_own_growth_is_subtracted() -> None:
    # The exporter keeps ~3 KB per export of its own, with jitter.
    rng = random.Random(1)
    control = [3 * KB + rng.uniform(-1500, 1500) for _ in range(6)]
    model = [3 * KB + rng.uniform(-1500, 1500) for _ in range(6)]
    assert heap_signal(series(model), series(control)).state == FLAT
    leak = heap_signal(series([m + 64 * KB for m in model]), series(control))
    assert leak.state == GROWS and leak.rate == pytest.approx(64 * KB, rel=0.1)


def test_a_warm_up_that_fades_is_not_a_leak() -> None:
    d = [11.4 * KB, 5.8 * KB, 1.4 * KB, 0.2 * KB, 0.0, 0.0]
    assert heap_signal(series(d), series([0.0] * 6)).state != GROWS


def test_the_floor_falls_with_more_passes() -> None:
    rng = random.Random(7)

    def floor(passes: int) -> float:
        noise = [rng.gauss(0, 20 * KB) for _ in range(passes)]
        return heap_signal(series(noise), series([rng.gauss(0, 20 * KB) for _ in range(passes)])).floor

    few, many = floor(4), floor(64)
    assert many < few / 2  # the standard error of a median: 1/sqrt(passes)


def test_too_few_passes_state_no_floor() -> None:
    s = heap_signal(series([8 * KB, 8 * KB]), None)
    assert s.floor is None and s.state == UNSURE


def heap_curve(per_call: float, noise: float = 0.0, seed: int = 0) -> MemoryCurve:
    rng = random.Random(seed)
    samples, heap = [], 80e6
    for phase, n in (("warmup", 8), ("repeat", 16), ("novel", 8), ("within", 6)):
        for k in range(n):
            heap += per_call + rng.gauss(0, noise) if noise else per_call
            samples.append(
                Sample(
                    phase,
                    {"B": k % 4 if phase in ("warmup", "repeat") else 10 + k},
                    {"rss": 300e6, "objects": 1000.0, "heap": heap},
                )
            )
    return MemoryCurve(samples=tuple(samples))


def test_judge_uses_the_heap_and_states_the_floor() -> None:
    clean = judge(heap_curve(0.0), heap_curve(0.0))
    assert clean.kind == CLEAN and clean.floor_bytes_per_call == HEAP_ALLOCATION / 4 and clean.growth_metric == "heap"
    assert clean.floor_bytes_per_new_shape is not None  # judged per new shape on RSS, with its band
    leak = judge(heap_curve(8 * KB), heap_curve(0.0))
    assert leak.kind == LEAK and leak.decided_by == "heap"
    assert leak.growth_bytes_per_call == pytest.approx(8 * KB)
    assert leak.to_json()["floor_bytes_per_call"] == HEAP_ALLOCATION / 4


def test_rss_only_curves_keep_the_band() -> None:
    v = judge(
        MemoryCurve(tuple(Sample(s.phase, s.dims, {"rss": 300e6, "objects": 1000.0}) for s in heap_curve(0.0).samples)),
        None,
    )
    assert v.kind == CLEAN and v.growth_metric == "rss"
    assert v.floor_bytes_per_call == pytest.approx(5e6 / 16)  # the band over the repeat steps
