"""Inside a child process: infer a model's inputs when the user gave none.

    python -m bisector.probe.infer_child REQUEST.json|-    (prints one JSON object on stdout)

The request holds the model (ModelSpec JSON) and the user's --dim ranges. Sources, in order, the
first whose guess a forward accepts wins:

1. an ``example_inputs`` or ``dummy_input`` attribute or method of the model;
2. a transformers ``PreTrainedModel``: its ``main_input_name`` and config;
3. the first known layer that takes the input (bisector.probe.infer_layers), in call order.

The forward signature names the inputs and says how many there are. Every guess is checked, and
its size ranges found, by forwards at small sizes (bisector.probe.infer_ranges). The answer:
``{"inputs": ["x=B,3,H,W"], "dims": {"B": [1, 16], ...}, "source": "...", "tried": [...]}``, or
``{"inputs": [], "tried": [...], "error": "...", "detail": "..."}``.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from bisector.model.spec import ALL_DTYPES, DEFAULT_DIM_RANGE, InputSpec, ModelSpec
from bisector.probe.infer_layers import kind_of, layer_guess
from bisector.probe.infer_ranges import Forwards, Guess, Refused, settle
from bisector.probe.loading import WorkloadError, build_model, load_namespace, one_line, user_traceback

EXAMPLE_ATTRIBUTES = ("example_inputs", "dummy_input")
# Guesses from layers, at most: each costs a forward or a few.
MAX_LAYER_GUESSES = 8


def forward_inputs(model: Any) -> tuple[list[str], bool]:
    """The names of forward's positional parameters, the required ones first, and whether it
    takes *args. (Optional ones follow: a PreTrainedModel's input_ids has a default.)"""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return [], True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return [p.name for p in positional], any(p.kind == p.VAR_POSITIONAL for p in params)


def required_count(model: Any) -> int:
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty)


def input_name(model: Any) -> str:
    names, _ = forward_inputs(model)
    return names[0] if names else "x"


def example_guesses(model: Any, tried: list[str]) -> Iterator[Guess]:
    """An example the model carries: its shapes and dtypes exactly, the first dim as the batch."""
    label = type(model).__name__
    found = False
    for attr in EXAMPLE_ATTRIBUTES:
        try:
            value = getattr(model, attr, None)
        except Exception as exc:  # noqa: BLE001 - a property of the user's that raises
            found = True
            tried.append(f"{label}.{attr}: reading it raised {one_line(exc)}")
            continue
        if value is None:
            continue
        found = True
        where = f"{label}.{attr}"
        if callable(value) and not _is_tensor(value):
            try:
                value = value()
            except Exception as exc:  # noqa: BLE001 - the user's method
                tried.append(f"{where}(): raised {one_line(exc)}")
                continue
            where += "()"
        try:
            tensors = _positional(model, value)
            yield _from_tensors(model, tensors, where)
        except ValueError as exc:
            tried.append(f"{where}: {exc}")
    if not found:
        tried.append(f"example_inputs/dummy_input: {label} has neither")


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _positional(model: Any, value: Any) -> list[Any]:
    """The example as positional tensors: a tensor, a tuple or list of them, or a dict keyed by
    forward's leading parameter names."""
    if _is_tensor(value):
        return [value]
    pair = isinstance(value, (tuple, list)) and len(value) == 2
    if pair and isinstance(value[0], (tuple, list)) and isinstance(value[1], dict):  # (args, kwargs)
        if value[1]:
            raise ValueError("keyword inputs are not taken from an example; use a bisector_inputs hook")
        value = value[0]
    if isinstance(value, dict):
        names, _ = forward_inputs(model)
        if set(value) != set(names[: len(value)]):
            keys = ", ".join(map(str, value))
            raise ValueError(f"its keys ({keys}) are not forward's first parameters ({', '.join(names)})")
        value = [value[n] for n in names[: len(value)]]
    if isinstance(value, (tuple, list)) and value and all(_is_tensor(v) for v in value):
        return list(value)
    raise ValueError(f"it is a {type(value).__name__}, not a tensor, a tuple of tensors or a dict of them")


def _from_tensors(model: Any, tensors: list[Any], where: str) -> Guess:
    names, var = forward_inputs(model)
    if len(tensors) > len(names) and not var:
        raise ValueError(f"it holds {len(tensors)} tensors; forward takes {len(names)}")
    names = names[: len(tensors)] if len(names) >= len(tensors) else [f"x{i}" for i in range(len(tensors))]
    batches = {int(t.shape[0]) for t in tensors if t.dim() >= 2}
    # The first dim is the batch only where every input of two or more dims agrees on it.
    batched = len(batches) == 1
    specs = []
    for name, t in zip(names, tensors):
        dtype = str(t.dtype).removeprefix("torch.")
        if dtype not in ALL_DTYPES:
            raise ValueError(f"{name} is {dtype}, which --input does not take")
        if t.dim() == 0:
            raise ValueError(f"{name} is a 0-d tensor, which --input does not take")
        dims: tuple[int | str, ...] = tuple(int(d) for d in t.shape)
        if batched and t.dim() >= 2:
            dims = ("B", *dims[1:])
        low = high = None
        if not t.is_floating_point() and dtype != "bool" and t.numel():
            # The values the example holds are the ones known to work.
            low, high = int(t.min()), int(t.max()) + 1
        specs.append(InputSpec(name=name, dims=dims, dtype=dtype, low=low, high=high))
    known = {"B": batches.pop()} if batched else {}
    return Guess(inputs=tuple(specs), source=where, known=known)


def transformers_guesses(model: Any, tried: list[str]) -> Iterator[Guess]:
    """A PreTrainedModel says what it takes: main_input_name, and its config the sizes."""
    transformers = sys.modules.get("transformers")  # only if the model file imported it: no 5 s import otherwise
    base = getattr(transformers, "PreTrainedModel", None) if transformers else None
    if base is None or not isinstance(model, base):
        tried.append(f"transformers: {type(model).__name__} is not a PreTrainedModel")
        return
    label = type(model).__name__
    main = str(getattr(model, "main_input_name", "input_ids"))
    config = model.config
    names, _ = forward_inputs(model)
    if not names or names[0] != main:
        tried.append(f"transformers: {label}'s main input {main} is not forward's first parameter")
        return
    if main == "input_ids" and getattr(config, "vocab_size", None):
        vocab = int(config.vocab_size)
        positions = getattr(config, "max_position_embeddings", None)
        top = min(DEFAULT_DIM_RANGE[1], int(positions)) if positions else DEFAULT_DIM_RANGE[1]
        spec = InputSpec(name=main, dims=("B", "T"), dtype="int64", low=0, high=vocab)
        where = f"{label}: {main}, vocab_size={vocab}" + (f", max_position_embeddings={positions}" if positions else "")
        yield Guess(inputs=(spec,), source=where, ranges={"T": (DEFAULT_DIM_RANGE[0], top)})
    elif main == "pixel_values" and getattr(config, "image_size", None):
        size = config.image_size
        h, w = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        channels = int(getattr(config, "num_channels", 3))
        spec = InputSpec(name=main, dims=("B", channels, h, w))
        yield Guess(inputs=(spec,), source=f"{label}: {main}, num_channels={channels}, image_size={config.image_size}")
    else:
        tried.append(f"transformers: {label}'s main input {main} is not one bisector infers (input_ids, pixel_values)")


def known_layers(model: Any) -> dict[str, Any]:
    """The modules a known rule applies to, in registration order, by dotted path."""
    return {path: m for path, m in model.named_modules() if kind_of(m)}


def layer_text(path: str, text: str) -> str:
    return f"{path}: {text}" if path else text


def layer_guess_at(model: Any, path: str, module: Any, alternate: bool = False) -> Guess | None:
    """The input the layer at path takes, as a guess; alternate: in the other layout it may come
    in (a convolution's channels last), None where it has none."""
    found = layer_guess(module)
    if found is None or (alternate and found.alternate is None):
        return None
    dims = found.alternate if alternate and found.alternate is not None else found.dims
    spec = InputSpec(name=input_name(model), dims=dims, dtype=found.dtype, low=found.low, high=found.high)
    return Guess(inputs=(spec,), source=layer_text(path, found.text + (", channels last" if alternate else "")))


def infer_from_layers(
    model: Any, forwards: Forwards, layers: Mapping[str, Any], given: Mapping[str, tuple[int, int]], tried: list[str]
) -> tuple[Guess, dict[str, tuple[int, int]]] | None:
    """The first layer in call order: layers are guessed in registration order, and a forward's
    hooks say which known layer it really reached first; a guess that runs is kept if that
    layer agrees with it (same input), else that layer's guess is tried next."""
    names, var = forward_inputs(model)
    needed = required_count(model)
    if needed > 1:
        listed = ", ".join(names[:needed])
        tried.append(f"first layer: forward takes {needed} inputs ({listed}); a first layer tells only one")
        return None
    if not names and not var:
        tried.append("first layer: forward takes no inputs")
        return None
    if not layers:
        tried.append("first layer: no Conv1d/2d/3d, Linear, Embedding, LSTM/GRU/RNN or TransformerEncoder in the model")
        return None
    queue = list(layers)
    done: set[str] = set()
    seen_inputs: set[tuple[InputSpec, ...]] = set()
    while queue and len(done) < MAX_LAYER_GUESSES:
        path = queue.pop(0)
        if path in done:
            continue
        done.add(path)
        guess = layer_guess_at(model, path, layers[path])
        if guess is None or guess.inputs in seen_inputs:
            continue
        seen_inputs.add(guess.inputs)
        try:
            ranges = settle(guess, forwards, given)
        except Refused as exc:
            tried.append(f"first layer {guess.source}: {exc}")
            reached = forwards.called[0] if forwards.called else None
            if reached and reached not in done:
                queue.insert(0, reached)  # the input got there first: that layer's guess next
                continue
            other = layer_guess_at(model, path, layers[path], alternate=True)
            if other is None or other.inputs in seen_inputs:
                continue
            seen_inputs.add(other.inputs)
            try:
                return other, settle(other, forwards, given)  # the model turns its input around first
            except Refused as again:
                tried.append(f"first layer {other.source}: {again}")
                continue
        reached = forwards.called[0] if forwards.called else path
        if reached != path:
            other = layer_guess_at(model, reached, layers[reached])
            if other is not None and other.inputs == guess.inputs:
                return Guess(inputs=guess.inputs, source=other.source), ranges
            if reached not in done:
                tried.append(f"first layer {guess.source}: runs, but the input reaches {reached} first")
                queue.insert(0, reached)
                continue
        return guess, ranges
    return None


def infer(spec: ModelSpec, given: Mapping[str, tuple[int, int]]) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    namespace = load_namespace(spec)
    model = build_model(spec, namespace)
    model.eval()
    layers = known_layers(model)
    forwards = Forwards(model, layers)
    tried: list[str] = []
    for guess in (*example_guesses(model, tried), *transformers_guesses(model, tried)):
        try:
            ranges = settle(guess, forwards, given)
        except Refused as exc:
            tried.append(f"{guess.source}: {exc}")
            continue
        return _answer(guess, ranges, tried)
    found = infer_from_layers(model, forwards, layers, given, tried)
    if found is not None:
        return _answer(*found, tried)
    return {"inputs": [], "tried": tried}


def _answer(guess: Guess, ranges: Mapping[str, tuple[int, int]], tried: list[str]) -> dict[str, Any]:
    return {
        "inputs": [str(s) for s in guess.inputs],
        "dims": {s: list(r) for s, r in ranges.items()},
        "source": guess.source,
        "tried": tried,
    }


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m bisector.probe.infer_child REQUEST.json", file=sys.stderr)
        return 2
    from bisector.probe.child import die_with_parent

    parent = os.environ.pop("BISECTOR_PARENT_PID", "")
    die_with_parent(int(parent) if parent.isdigit() else None)
    # What the model prints goes to stderr: stdout carries the answer alone.
    answer_fd = os.dup(1)
    os.dup2(2, 1)
    _quiet()
    if args[0] == "-":
        text = sys.stdin.read()
    else:
        with open(args[0], encoding="utf-8") as fh:
            text = fh.read()
    request = json.loads(text)
    given = {s: (int(r[0]), int(r[1])) for s, r in request.get("dims", {}).items()}
    try:
        answer = infer(ModelSpec.from_json(request["model"]), given)
    except WorkloadError as exc:
        answer = {"inputs": [], "tried": [], "error": exc.message, "detail": exc.tb}
    except Exception as exc:  # noqa: BLE001 - the user's code, or a bug of ours: an answer still, never a traceback
        answer = {
            "inputs": [],
            "tried": [],
            "error": f"inference raised {one_line(exc)}",
            "detail": user_traceback(exc),
        }
    with os.fdopen(answer_fd, "w") as out:
        out.write(json.dumps(answer))
    from bisector.probe.procs import kill_descendants

    kill_descendants()  # what the model started ends with the child, as in a probe
    return 0


def _quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("torch", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
