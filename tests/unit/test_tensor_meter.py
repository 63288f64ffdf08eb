"""The exact tensor meter (probe/meters.py TensorMeter) and its rule (verdict.tensor_signal): storages
counted once whatever views share them, the tensors frozen before the loop still read, the meter's
own storage objects kept out of the object count, and growth of one element a call judged a leak."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from bisector.judge.attribution import needs_owners
from bisector.judge.signals import FLAT, GROWS, TENSORS, tensor_signal
from bisector.judge.verdict import CLEAN, LEAK, judge
from bisector.model.curve import MemoryCurve, Sample
from bisector.probe.meters import Meters, TensorMeter, _storage_bytes
from tests.conftest import has_cuda

ROW = 256 * 4  # one 256-float row


def test_views_and_shared_storages_count_once() -> None:
    t = torch.zeros(64, 256)
    other = torch.zeros(3, dtype=torch.float16)
    objects = [t, t[1:], t.detach(), t.view(-1), t[:, :8].T, torch.Tensor(t.untyped_storage()), other]
    total, _ = TensorMeter().read(objects)
    assert total == 64 * ROW + 3 * 2


def test_a_bank_grown_by_cat_is_read_row_by_row() -> None:
    meter = TensorMeter()
    bank = torch.empty(0, 256)
    readings = []
    for _ in range(4):
        bank = torch.cat([bank, torch.ones(1, 256)])
        readings.append(meter.read([bank])[0])
    assert [b - a for a, b in zip(readings, readings[1:])] == [ROW] * 3
    assert meter.element_bytes == 4


def test_tensors_frozen_before_the_loop_are_read_by_weak_reference() -> None:
    class Holder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("queue", torch.zeros(2, 256))

    holder = Holder()
    meter = TensorMeter()
    meter.watch([holder.queue, object()])  # what gc listed before gc.freeze
    before = meter.read([])[0]
    holder.queue.data = torch.cat([holder.queue.data, torch.ones(1, 256)])  # grown in place, same object
    assert meter.read([])[0] - before == ROW
    del holder
    assert meter.read([])[0] == 0.0  # a weak reference: the meter keeps nothing alive


def test_data_less_storages_weigh_nothing() -> None:
    meta = torch.empty(1000, device="meta")
    assert TensorMeter().read([meta, torch.empty(0), torch.empty(0, 256)])[0] == 0.0


def test_storages_are_keyed_by_pointer_and_device() -> None:
    """A CUDA storage and a CPU one at the same address are two storages (faked: no GPU needed)."""
    seen: set[tuple[int, bool]] = set()

    def storage(ptr: int, cuda: bool, nbytes: int) -> SimpleNamespace:
        return SimpleNamespace(data_ptr=lambda: ptr, is_cuda=cuda, nbytes=lambda: nbytes)

    assert _storage_bytes(storage(4096, True, 1024), seen) == 1024
    assert _storage_bytes(storage(4096, False, 512), seen) == 512
    assert _storage_bytes(storage(4096, True, 1024), seen) == 0  # the same CUDA storage again
    assert _storage_bytes(storage(0, True, 4096), seen) == 0  # no data (meta, fake)


@pytest.mark.skipif(not has_cuda(), reason="needs a CUDA device")
def test_cuda_tensors_are_counted_with_their_views() -> None:
    t = torch.zeros(16, 256, device="cuda")
    assert TensorMeter().read([t, t[3:], torch.zeros(4, device="cpu")])[0] == 16 * ROW + 16


def test_the_meters_own_storage_objects_stay_out_of_the_object_count() -> None:
    """Reading a storage gives it a Python object that lives as long as it (torch preserves it)."""
    m = Meters(device="cpu", heap=None, trim=False)
    m.sample()  # psutil's and the meter's own first-use objects
    kept = [torch.zeros(8) for _ in range(50)]
    first, second, third = m.sample(), m.sample(), m.sample()
    assert second["objects"] == first["objects"] == third["objects"]
    assert second["tensors"] == third["tensors"] >= 50 * 32
    assert "torch.storage.UntypedStorage" not in Meters.type_counts()
    del kept


def test_a_read_costs_little_per_object() -> None:
    """Linear in the objects the collector lists, microseconds for a model's few hundred tensors."""
    objects: list[object] = [[] for _ in range(100_000)] + [torch.zeros(4) for _ in range(1000)]
    meter = TensorMeter()
    meter.read(objects)
    started = time.perf_counter()
    meter.read(objects)
    assert time.perf_counter() - started < 0.5  # ~15 ms here; generous for a loaded machine


# -- the rule ------------------------------------------------------------------------------------


def _curve(tensors, heap=lambda i: 5e6, objects=lambda i: 1000.0, element: int = 4, shapes: int = 1) -> MemoryCurve:
    phases = (("warmup", 4), ("repeat", 16), ("novel", 6), ("within", 4))
    samples, i = [], 0
    for phase, n in phases:
        for k in range(n):
            b = (k % shapes) + 1 if phase in ("warmup", "repeat") else 10 + k
            values = {"rss": 3e8, "heap": heap(i), "objects": objects(i), "tensors": float(tensors(phase, i))}
            samples.append(Sample(phase, {"B": b}, values))
            i += 1
    return MemoryCurve(samples=tuple(samples), meta={"tensor_element_bytes": element})


def test_a_row_a_call_under_the_heaps_floor_is_a_leak_in_tensors() -> None:
    v = judge(_curve(lambda p, i: 1e6 + ROW * i), None, metric="rss")
    assert v.kind == LEAK
    assert (v.growth_metric, v.decided_by) == (TENSORS, TENSORS)
    assert v.growth_bytes_per_call == ROW
    assert v.objects_per_call == 0
    assert not needs_owners(v)  # Python reaches the tensor: the model's, no traced probe needed


def test_one_element_a_call_is_growth_and_less_is_not() -> None:
    assert judge(_curve(lambda p, i: 1e6 + 4 * i, element=4), None).kind == LEAK
    assert judge(_curve(lambda p, i: 1e6 + 2 * i, element=4), None).kind == CLEAN
    assert judge(_curve(lambda p, i: 1e6 + 2 * i, element=2), None).kind == LEAK


def test_flat_tensors_and_the_controls_own_growth_are_clean() -> None:
    assert judge(_curve(lambda p, i: 1e6), None).kind == CLEAN
    grows = _curve(lambda p, i: 1e6 + ROW * i)
    assert judge(grows, grows).kind == CLEAN  # the toolchain's own, as the control shows it


def test_a_one_off_tensor_and_a_bank_that_fills_then_stops_are_not_leaks() -> None:
    one_off = tensor_signal([0, 0, 0, 4096, 4096, 4096, 4096, 4096, 4096], None)
    assert one_off.state == FLAT
    filling = tensor_signal([float(min(i, 5) * ROW) for i in range(12)], None)  # a bound of 5 rows
    assert filling.state != GROWS


def test_a_tensor_kept_per_shape_cancels_over_a_pass_and_every_other_call_grows_per_pass() -> None:
    last_output = [float((1 + i % 2) * ROW) for i in range(17)]  # the last call's output, by shape
    assert tensor_signal(last_output, None, pass_len=2).state == FLAT
    every_other = [float(ROW * ((i + 1) // 2)) for i in range(17)]
    assert tensor_signal(every_other, None, pass_len=1).state != GROWS  # half the calls up
    s = tensor_signal(every_other, None, pass_len=2)
    assert s.state == GROWS and s.rate == ROW / 2


def test_tensors_per_new_shape_are_reported_not_judged() -> None:
    """A mask regrown to the largest input so far grows over ascending shapes as a leak would."""
    v = judge(_curve(lambda p, i: 1e6 + (ROW * 100 * i if p == "novel" else 0)), None)
    assert v.kind == CLEAN


# -- bounded fixes judged full -------------------------------------------------------------------


def test_a_warm_up_of_n_calls_fills_a_bound_of_n_whatever_the_repeated_shapes() -> None:
    from bisector.fix.growth import warm_calls
    from bisector.model.kinds import Kind
    from bisector.model.schedule import PROFILES, build_schedule, warmed

    for dims, shapes in (({"B": (1, 2)}, 1), ({"B": (1, 16)}, 4)):
        profiles = warmed(PROFILES, dims, 8)
        steps = build_schedule(dims, profiles["eager"], 0).steps
        warm = [s for s in steps if s.phase == "warmup"]
        repeat = [s for s in steps if s.phase == "repeat"]
        assert len({s.key() for s in repeat}) == shapes
        assert len(warm) >= 8 and len(repeat) == len(build_schedule(dims, PROFILES["eager"], 0).phase("repeat"))
    assert warmed(PROFILES, {"B": (1, 16)}, 2)["eager"] == PROFILES["eager"]  # warm enough already
    leak = SimpleNamespace(kind=Kind.LEAK)
    assert (warm_calls(leak, 8), warm_calls(leak, None), warm_calls(SimpleNamespace(kind=Kind.SHAPE_GROWTH), 8)) == (
        8,
        0,
        0,
    )
