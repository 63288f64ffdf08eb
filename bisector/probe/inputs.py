"""Input tensors for a schedule step, reproducible from (seed, step index).

From the plan: float inputs are ``randn`` (or uniform in LOW:HIGH), integer inputs
``randint(LOW, HIGH)``, bool inputs random. Or from the model file's hook::

    def bisector_inputs(dims, rng):      # dims: {"B": 4, "T": 37}; rng: a seeded torch.Generator
        ids = torch.randint(0, 1000, (dims["B"], dims["T"]), generator=rng)
        return (ids,), {"attention_mask": torch.ones_like(ids)}

The hook may return a tensor, a tuple/list of positional args, a dict of keyword args, or a pair
(args, kwargs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bisector.model.spec import DEFAULT_INT_RANGE, INPUTS_HOOK, InputPlan
from bisector.probe.loading import WorkloadError, one_line, user_traceback

Args = tuple[tuple[Any, ...], dict[str, Any]]


def _dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


class InputFactory:
    def __init__(self, plan: InputPlan, namespace: Any, device: str, seed: int) -> None:
        self.plan = plan
        self.device = device
        self.seed = seed
        self.hook: Callable[..., Any] | None = getattr(namespace, INPUTS_HOOK, None) if plan.use_hook else None
        if plan.use_hook and self.hook is None:
            raise WorkloadError("inputs", f"the model file defines no {INPUTS_HOOK}(dims, rng)")

    def make(self, index: int, dims: Mapping[str, int]) -> Args:
        import torch

        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        if self.hook is not None:
            try:
                result = self.hook(dict(dims), gen)
            except Exception as exc:  # noqa: BLE001 - the user's hook
                raise WorkloadError("inputs", f"{INPUTS_HOOK} raised {one_line(exc)}", user_traceback(exc)) from None
            args, kwargs = _normalize(result)
        else:
            args = tuple(self._tensor(spec, dims, gen) for spec in self.plan.inputs)
            kwargs = {}
        if self.device != "cpu":
            args, kwargs = to_device((args, kwargs), self.device)
        return args, kwargs

    def _tensor(self, spec: Any, dims: Mapping[str, int], gen: Any) -> Any:
        import torch

        shape = spec.shape(dims)
        if spec.is_float:
            if spec.low is not None:
                t = torch.rand(shape, generator=gen) * (spec.high - spec.low) + spec.low
            else:
                t = torch.randn(shape, generator=gen)
            return t.to(_dtype(spec.dtype))
        if spec.dtype == "bool":
            return torch.randint(0, 2, shape, generator=gen).bool()
        low, high = (spec.low, spec.high) if spec.low is not None else DEFAULT_INT_RANGE
        return torch.randint(int(low), int(high), shape, generator=gen, dtype=_dtype(spec.dtype))


def _normalize(result: Any) -> Args:
    import torch

    if isinstance(result, torch.Tensor):
        return (result,), {}
    if isinstance(result, dict):
        return (), dict(result)
    if (
        isinstance(result, tuple)
        and len(result) == 2
        and isinstance(result[0], (tuple, list))
        and isinstance(result[1], dict)
    ):
        return tuple(result[0]), dict(result[1])
    if isinstance(result, (tuple, list)):
        return tuple(result), {}
    raise WorkloadError(
        "inputs",
        f"{INPUTS_HOOK} returned {type(result).__name__}; return a tensor, a tuple of args, a dict of kwargs "
        "or (args, kwargs)",
    )


def to_device(tree: Any, device: str) -> Any:
    import torch
    from torch.utils import _pytree as pytree

    return pytree.tree_map(lambda x: x.to(device) if isinstance(x, torch.Tensor) else x, tree)


def tensor_leaves(tree: Any) -> list[Any]:
    import torch
    from torch.utils import _pytree as pytree

    return [x for x in pytree.tree_leaves(tree) if isinstance(x, torch.Tensor)]
