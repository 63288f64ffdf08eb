"""Checking a guessed input with real forwards, and finding the size ranges the model accepts
(child side: needs torch).

A guess is never taken on trust: one forward at the smallest shape, then a few more at the edges
of each range, on the CPU and without autograd, with the very tensors the probes would make
(bisector.probe.inputs). Sizes start at build_input_plan's defaults and move only when a forward
refuses them: up for the smallest size (pooling and strides need room), down for the largest
(position tables), to one fixed size when the model takes only one (ViT's image_size, a U-Net's
multiples of 2^k).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bisector.model.spec import BATCH_SYMBOLS, DEFAULT_BATCH_RANGE, DEFAULT_DIM_RANGE, InputPlan, InputSpec
from bisector.probe.inputs import InputFactory
from bisector.probe.loading import one_line

# The smallest size tried first is the default's; larger ones for models that pool or stride it away.
LOW_TRIES = (DEFAULT_DIM_RANGE[0], 8, 16, 32, 64, 128, 224, 256, 384, 512)
# Below the default's top: round sizes a position table or a stack of halvings may stop at.
HIGH_TRIES = (DEFAULT_DIM_RANGE[1], 96, 64, 48, 32, 16, 8)
BATCH_TRIES = (DEFAULT_BATCH_RANGE[1], 8, 4, 2)


@dataclass(frozen=True)
class Guess:
    """Inputs one source proposes, before any forward has checked them."""

    inputs: tuple[InputSpec, ...]
    source: str  # for the user: where the guess came from, e.g. "stem: Conv2d(3, 16)"
    # Ranges the source knows (a config's position limit), taken as the largest to try.
    ranges: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    # A size known to work (an example's batch), the fallback when the default range does not.
    known: Mapping[str, int] = field(default_factory=dict)

    def symbols(self) -> list[str]:
        return list(dict.fromkeys(s for spec in self.inputs for s in spec.symbols))


class Refused(Exception):
    """A forward refused the guess: the message says at which shape and why."""


class Forwards:
    """Runs the model on a guess's tensors at given sizes; remembers the known first layers in the
    order the last forward called them (forward pre-hooks), to correct a guess made from
    registration order."""

    def __init__(self, model: Any, watched: Mapping[str, Any]) -> None:
        self.model = model
        self.called: list[str] = []
        self.count = 0
        for path, module in watched.items():
            try:
                module.register_forward_pre_hook(lambda *_a, _p=path: self.called.append(_p))
            except (AttributeError, RuntimeError):  # scripted modules take no hooks
                pass

    def run(self, guess: Guess, sizes: Mapping[str, int]) -> str | None:
        """None when the forward returned; else one line saying what it raised, and at which shapes."""
        import torch

        plan = InputPlan(inputs=guess.inputs, dims={s: (v, v) for s, v in sizes.items()})
        args, kwargs = InputFactory(plan, None, "cpu", seed=0).make(self.count, sizes)
        self.count += 1
        self.called = []
        try:
            with torch.no_grad():
                self.model(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the user's forward refusing these inputs is the answer
            shapes = ", ".join(f"{s.name}={','.join(str(d) for d in s.shape(sizes))}" for s in guess.inputs)
            return f"a forward with {shapes} raised {one_line(exc)}"
        return None


def settle(guess: Guess, forwards: Forwards, given: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """The range of every symbol of the guess that forwards accept. `given` (the user's --dim) is
    kept as is, and held at its smallest while the others are looked for. Raises Refused when
    even the smallest shape fails."""
    symbols = guess.symbols()
    batch = [s for s in symbols if s in BATCH_SYMBOLS and s not in given]
    sizes = [s for s in symbols if s not in BATCH_SYMBOLS and s not in given]
    held = {s: given[s][0] for s in symbols if s in given}

    def run(n_batch: int, n_size: int, first_size: int | None = None) -> str | None:
        point = {**held, **_at(batch, n_batch), **_at(sizes, n_size)}
        if first_size is not None:
            point[sizes[0]] = first_size
        return forwards.run(guess, point)

    batch_lo = DEFAULT_BATCH_RANGE[0]
    try:
        size_lo = _smallest_size(guess, sizes, lambda n: run(batch_lo, n))
    except Refused as refused:
        # An example's batch, else 2, where a batch of 1 is refused (a squeeze() of the batch dim).
        batch_lo = next((guess.known[s] for s in batch if s in guess.known), 2)
        if not batch or batch_lo == DEFAULT_BATCH_RANGE[0]:
            raise
        try:
            size_lo = _smallest_size(guess, sizes, lambda n: run(batch_lo, n))
        except Refused:
            raise refused from None  # what a batch of 1 met says more
    size_hi = _largest_size(guess, sizes, size_lo, lambda n: run(batch_lo, n))
    if size_hi > size_lo and len(sizes) > 1 and run(batch_lo, size_hi, first_size=size_lo):
        # The schedule varies sizes one by one: a model that takes only square inputs stays at one size.
        size_hi = size_lo
    batch_hi = next((n for n in BATCH_TRIES if n > batch_lo and run(n, size_hi) is None), batch_lo)
    ranges = {**dict(given), **{s: (size_lo, size_hi) for s in sizes}, **{s: (batch_lo, batch_hi) for s in batch}}
    return {s: ranges[s] for s in symbols}


def _at(symbols: list[str], n: int) -> dict[str, int]:
    return {s: n for s in symbols}


def _smallest_size(guess: Guess, sizes: list[str], check: Callable[[int], str | None]) -> int:
    """The smallest size the forward accepts for every size symbol at once; Refused if none."""
    if not sizes:
        if error := check(0):
            raise Refused(error)
        return 0
    lowest = min(guess.ranges.get(s, DEFAULT_DIM_RANGE)[0] for s in sizes)
    first_error = ""
    for n in [lowest] + [n for n in LOW_TRIES if n > lowest]:
        error = check(n)
        if error is None:
            return n
        first_error = first_error or error
    raise Refused(first_error)


def _largest_size(guess: Guess, sizes: list[str], lo: int, check: Callable[[int], str | None]) -> int:
    """The largest size to measure up to: the default top (or the source's limit) when it works,
    else the first smaller round size that does. `lo`, one fixed size, when the model refuses the
    size just above its smallest, as a model that takes one size or only multiples does."""
    if not sizes:
        return 0
    top = min(guess.ranges.get(s, DEFAULT_DIM_RANGE)[1] for s in sizes)
    if lo >= top:
        # Over the default top (a model that needs 128 or more): twice the smallest, if it is taken.
        return 2 * lo if top >= DEFAULT_DIM_RANGE[1] and check(2 * lo) is None else lo
    if check(lo + 1):
        return lo
    return next((n for n in (top, *HIGH_TRIES) if lo < n <= top and check(n) is None), lo)
