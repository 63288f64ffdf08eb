"""Region probes replay distinct recorded inputs per shape, as the whole model gets new values at
every step: a cache keyed by content (a hash of the input's bytes) grows in a region probe too."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from bisector.model.capture import MAX_VARIANTS, capture_schedule, dims_key, occurrences, variant_indices
from bisector.model.schedule import Schedule, ScheduleProfile, Step
from bisector.probe.regions import region_targets, run_capture


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class Factory:
    def make(self, index: int, dims: dict[str, int]) -> tuple[tuple, dict]:
        gen = torch.Generator().manual_seed(index)
        return (torch.randn(dims["B"], 4, generator=gen),), {}


def _schedule(*dims: dict[str, int]) -> Schedule:
    return Schedule(steps=tuple(Step("repeat", d) for d in dims), seed=0, profile=ScheduleProfile())


def test_capture_schedule_lists_a_shape_once_per_run_up_to_the_cap() -> None:
    a, b = {"B": 2}, {"B": 3}
    schedule = _schedule(a, b, a, a)
    counts = occurrences([schedule])
    assert counts == {dims_key(a): 3, dims_key(b): 1}
    steps = capture_schedule([a, b], 0, counts).steps
    assert [s.dims for s in steps] == [a, a, a, b]
    assert variant_indices(schedule) == [0, 0, 1, 2]
    many = occurrences([_schedule(*[a] * (MAX_VARIANTS + 5))])
    assert len(capture_schedule([a], 0, many).steps) == MAX_VARIANTS


def test_a_region_replays_a_new_recorded_input_at_each_run_of_its_shape(tmp_path: Path) -> None:
    model, factory = Net(), Factory()
    a = {"B": 2}
    probe = _schedule(a, a, a, a)  # the region probe's schedule: four runs of one shape
    capture = capture_schedule([a], 0, {dims_key(a): 3})  # three variants recorded
    run_capture(model, SimpleNamespace(schedule=capture), factory, tmp_path)
    req = SimpleNamespace(
        capture=str(tmp_path), regions=("lin",), schedule=probe, options=SimpleNamespace(device="cpu")
    )
    (target,) = region_targets(model, req, factory)
    seen = [target.calls(i, step)[0][0][0] for i, step in enumerate(probe.steps)]
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    assert torch.equal(seen[3], seen[0])  # past the variants recorded, they cycle
