"""Verdicts on synthetic curves: what the judge must call leak, shape-growth, clean or unsure."""

from __future__ import annotations

import random

import pytest

from bisector.judge.signals import FLAT, GROWS, UNSURE, bytes_signal, count_signal, theil_sen
from bisector.judge.verdict import CLEAN, INCONCLUSIVE, LEAK, SHAPE_GROWTH, Bands, judge, worst
from bisector.model.curve import MemoryCurve, Sample

MB = 1e6
PHASES = (("warmup", 8), ("repeat", 16), ("novel", 8), ("within", 6))


def curve(rss=lambda phase, i, k: 300 * MB, objects=lambda phase, i, k: 1000.0, extra=None) -> MemoryCurve:
    """A curve built from functions of (phase, index overall, index within the phase)."""
    samples = []
    i = 0
    for phase, n in PHASES:
        for k in range(n):
            values = {"rss": float(rss(phase, i, k)), "objects": float(objects(phase, i, k))}
            if extra:
                values.update({m: float(f(phase, i, k)) for m, f in extra.items()})
            samples.append(Sample(phase, {"B": k}, values))
            i += 1
    return MemoryCurve(samples=tuple(samples))


def noisy(sd: float, seed: int = 0):
    rng = random.Random(seed)
    return lambda phase, i, k: 300 * MB + rng.gauss(0, sd)


def test_theil_sen_ignores_outliers() -> None:
    y = [float(2 * i) for i in range(20)]
    y[5] = 1000.0
    slope, intercept = theil_sen(y)
    assert slope == pytest.approx(2.0)
    assert intercept == pytest.approx(0.0)


@pytest.mark.parametrize(
    "deltas, state",
    [([5, 5, 6], GROWS), ([3, 0, 0], FLAT), ([8, -8, 1], FLAT), ([1, 1, 1, 1, 1], GROWS), ([0, 0, 0, 0], FLAT)],
)
def test_count_rule_of_the_refleak_hunter(deltas: list[int], state: str) -> None:
    y = [100.0]
    for d in deltas:
        y.append(y[-1] + d)
    assert count_signal("objects", "repeat", y, None).state == state


def test_counts_are_judged_above_the_control_and_its_jitter() -> None:
    # torch's exporter leaves ~58 objects per export whatever the model (FIELD-NOTES): not the model's.
    control = [0, 57, 116, 174, 233, 290, 349]
    model_clean = [0, 60, 118, 177, 235, 292, 350]
    model_leak = [0, 240, 480, 718, 958, 1197, 1437]
    assert count_signal("objects", "repeat", model_clean, control).state == FLAT
    leak = count_signal("objects", "repeat", model_leak, control)
    assert leak.state == GROWS
    assert leak.rate == pytest.approx(181, abs=2)
    assert leak.baseline == pytest.approx(58, abs=1)


def test_counts_that_fade_are_warm_up_not_a_leak() -> None:
    y = [0, 9, 16, 21, 23, 23, 23, 23]
    assert count_signal("objects", "repeat", y, None).state != GROWS


def test_bytes_need_to_clear_the_band_and_the_noise() -> None:
    band = 5 * MB
    steady = [100 * MB + i * 1 * MB for i in range(10)]  # 9 MB over the segment
    assert bytes_signal("rss", "repeat", steady, None, band, noise=0.1 * MB).state == GROWS
    small = [100 * MB + i * 0.2 * MB for i in range(10)]  # 1.8 MB: within the band
    assert bytes_signal("rss", "repeat", small, None, band, noise=0.1 * MB).state == FLAT
    slow = [100 * MB + i * 0.4 * MB for i in range(10)]  # 3.6 MB: might be a slow leak
    assert bytes_signal("rss", "repeat", slow, None, band, noise=0.1 * MB).state == UNSURE
    assert bytes_signal("rss", "novel", slow, None, band, noise=0.1 * MB).state == FLAT


def test_clean_noisy_curve_is_clean() -> None:
    v = judge(curve(rss=noisy(0.5 * MB)), None)
    assert v.kind == CLEAN
    assert abs(v.growth_bytes_per_call) < 0.2 * MB
    assert 0.2 * MB < v.noise_bytes < 1 * MB


def test_linear_rss_growth_is_a_leak_even_with_noise() -> None:
    rng = random.Random(1)
    v = judge(curve(rss=lambda p, i, k: 300 * MB + i * 1 * MB + rng.gauss(0, 0.2 * MB)), None)
    assert v.kind == LEAK
    assert v.growth_bytes_per_call == pytest.approx(1 * MB, rel=0.15)


def test_native_leak_seen_only_in_rss_is_a_leak() -> None:
    v = judge(curve(rss=lambda p, i, k: 300 * MB + i * 2 * MB), None)
    assert v.kind == LEAK
    assert v.objects_per_call == 0


def test_python_leak_seen_only_in_objects_is_a_leak() -> None:
    v = judge(curve(objects=lambda p, i, k: 1000 + i), None)
    assert v.kind == LEAK
    assert v.objects_per_call == pytest.approx(1)
    assert any("objects" in r for r in v.reasons)


def test_arena_staircase_is_bounded_shape_growth() -> None:
    """Grows in steps as larger shapes arrive, flat on repeats and on smaller new shapes."""

    def rss(phase, i, k):
        base = 300 * MB
        if phase in ("warmup", "repeat"):
            return base + (20 * MB if (phase, k) != ("warmup", 0) else 0)
        if phase == "novel":
            return base + 20 * MB + (k // 3 + 1) * 25 * MB  # doubling steps
        return base + 20 * MB + 3 * 25 * MB

    v = judge(curve(rss=rss), None)
    assert v.kind == SHAPE_GROWTH
    assert v.bounded is True
    assert v.growth_bytes_per_new_shape > 5 * MB
    assert abs(v.growth_bytes_per_call) < 1 * MB


def test_cache_keyed_by_shape_is_unbounded_shape_growth() -> None:
    def objects(phase, i, k):
        if phase in ("warmup", "repeat"):
            return 1000 + min(i, 3)  # four repeated shapes cached during warm-up
        if phase == "novel":
            return 1004 + k + 1
        return 1004 + 8 + k + 1

    v = judge(curve(objects=objects), None)
    assert v.kind == SHAPE_GROWTH
    assert v.bounded is False
    assert v.objects_per_new_shape == pytest.approx(1)


def test_noise_wider_than_the_band_is_inconclusive() -> None:
    v = judge(curve(rss=noisy(4 * MB, seed=3)), None)
    assert v.kind == INCONCLUSIVE


def test_growth_is_judged_against_the_control() -> None:
    grow = lambda p, i, k: 300 * MB + i * 0.5 * MB  # noqa: E731 - 8 MB over the repeats
    assert judge(curve(rss=grow), None).kind == LEAK
    v = judge(curve(rss=grow), curve(rss=grow))
    assert v.kind == CLEAN
    assert v.baseline_bytes_per_call == pytest.approx(0.5 * MB)
    assert v.growth_bytes_per_call == pytest.approx(0)


def test_export_stage_does_not_judge_objects_per_new_shape() -> None:
    # The exporter's FakeTensor dispatch cache grows per shape with the model's op count.
    objects = lambda p, i, k: 1000 + (k + 1) * 200 if p in ("novel", "within") else 1000  # noqa: E731
    assert judge(curve(objects=objects), None).kind == SHAPE_GROWTH
    v = judge(curve(objects=objects), None, count_phases=("repeat",))
    assert v.kind == CLEAN
    assert v.objects_per_new_shape == pytest.approx(200)


def test_gpu_memory_has_its_own_band() -> None:
    gpu_small = {"gpu": lambda p, i, k: 1e9 + i * 2 * MB}  # 32 MB over repeats: GPU noise
    assert judge(curve(extra=gpu_small), None).kind == CLEAN
    gpu_leak = {"gpu": lambda p, i, k: 1e9 + i * 20 * MB}
    assert judge(curve(extra=gpu_leak), None).kind == LEAK
    assert judge(curve(extra=gpu_small), None, Bands(gpu=10 * MB)).kind == LEAK


def test_cuda_allocated_counts_exactly() -> None:
    allocated = {"cuda_allocated": lambda p, i, k: 4096.0 * i, "gpu": lambda p, i, k: 1e9}
    v = judge(curve(extra=allocated), None)
    assert v.kind == LEAK


def test_device_growth_is_the_headline_when_it_outgrows_the_host_heap() -> None:
    """A CUDA tensor kept per call: KBs of host bookkeeping, MBs on the device (as measured on a GPU)."""
    kept = {
        "heap": lambda p, i, k: 2e8 + 3800.0 * i,
        "cuda_allocated": lambda p, i, k: 16.8 * MB * i,
        "gpu": lambda p, i, k: 1e9 + 16.8 * MB * i,
    }
    v = judge(curve(extra=kept), None)
    assert v.kind == LEAK
    assert v.growth_metric == "cuda_allocated"
    assert v.growth_bytes_per_call == pytest.approx(16.8 * MB, rel=0.01)
    per_shape = {  # a per-shape table cached on the device (shape_cache on an H200: +341 KB/new shape)
        "rss": lambda p, i, k: 300 * MB + (65000.0 * k if p == "novel" else 0.0),
        "cuda_allocated": lambda p, i, k: 341000.0 * k if p == "novel" else 0.0,
    }
    v = judge(curve(extra=per_shape), None)
    assert v.kind == SHAPE_GROWTH
    assert v.growth_bytes_per_new_shape == pytest.approx(341000.0, rel=0.01)
    host_only = {"heap": lambda p, i, k: 2e8 + 3800.0 * i, "cuda_allocated": lambda p, i, k: 0.0}
    assert judge(curve(extra=host_only), None).growth_metric == "heap"


def test_worst_orders_verdicts() -> None:
    assert worst([CLEAN, SHAPE_GROWTH, INCONCLUSIVE]) == SHAPE_GROWTH
    assert worst([CLEAN, LEAK]) == LEAK
    assert worst([]) == CLEAN


def test_verdict_json_has_the_report_fields() -> None:
    data = judge(curve(objects=lambda p, i, k: 1000 + i), None).to_json()
    for key in (
        "verdict",
        "growth_bytes_per_call",
        "growth_bytes_per_new_shape",
        "baseline_bytes_per_call",
        "noise_bytes",
    ):
        assert key in data


def test_noise_that_flips_between_two_levels_is_seen() -> None:
    from bisector.judge.signals import robust_sd

    flips = [300 * MB + (4 * MB if i % 2 else 0) for i in range(9)]  # five low, four high
    assert robust_sd(flips) > 2 * MB
    assert robust_sd([300 * MB] * 9) == 0
