"""Helpers bisector writes into a user's scripts, as real, tested functions.

They are copied into the script with ``inspect.getsource`` (``source_of``; in a serving script
``onnxruntime.``/``numpy.`` renamed to the aliases it already imports), never written as text
templates, and the probe calls the same functions on its own feeds (the padding and the bounds
guard, bisector.probe.ort.InputAdapter). So they import only numpy and onnxruntime, and take
their settings from module constants that the patch writes into the script above them (here
placeholders):

- ``_BISECTOR_SESSIONS``: per model name, its ONNX Runtime settings (serving scripts);
- ``_BISECTOR_DYNAMIC_AXES``: per input name, axis -> symbol, the axes that vary;
- ``_BISECTOR_BOUNDS``: per symbol, the (min, max) size the model was exported for;
- ``_BISECTOR_WARM_UP_LARGEST``: per input position, the largest size of each varying axis.

The functions the probe calls take the axes and bounds as arguments too. Feeds for a warm-up are
built from the session itself (``session.get_inputs()``: names, dtypes, ranks), never from a
hard-coded shape or dtype.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Mapping, Sequence

import numpy
import onnxruntime

_BISECTOR_SESSIONS: dict = {}
_BISECTOR_DYNAMIC_AXES: dict = {}
_BISECTOR_BOUNDS: dict = {}
_BISECTOR_WARM_UP_LARGEST: list = []

# What each kind of script gets, in this order (a helper comes after the ones it calls, or
# with them).
SERVING_HELPERS = ("_bisector_session_options", "_bisector_session", "_bisector_feed")
GUARD_HELPERS = ("_bisector_guard",)
PADDING_HELPERS = ("_bisector_guard", "_bisector_pad", "_bisector_crop", "_bisector_run")
WARM_UP_HELPERS = ("_bisector_feed", "_bisector_warm_up")


def source_of(names: Sequence[str], alias: Mapping[str, str] | None = None) -> str:
    """The named helpers' source, two blank lines apart; with alias, `onnxruntime.` and `numpy.`
    written as the script imports them ({"onnxruntime": "ort", "numpy": "np"})."""
    module = sys.modules[__name__]
    code = []
    for name in names:
        src = inspect.getsource(getattr(module, name))
        for mod, short in (alias or {}).items():
            src = re.sub(rf"\b{mod}\.", f"{short}.", src)
        code.append(src)
    return "\n\n".join(code)


def _bisector_session_options(key, options=None):
    """bisector: the session options measured for this model (its entry in _BISECTOR_SESSIONS);
    other models' sessions are left as they were."""
    settings = _BISECTOR_SESSIONS.get(key, {}).get("session_options", {})
    if not settings:
        return options
    if options is None:
        options = onnxruntime.SessionOptions()
    for name, value in settings.items():
        if name == "arena_extend_strategy":
            strategy = {"kNextPowerOfTwo": 0, "kSameAsRequested": 1}.get(value, value)
            info = onnxruntime.OrtMemoryInfo(
                "Cpu", onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, onnxruntime.OrtMemType.DEFAULT
            )
            arena = onnxruntime.OrtArenaCfg({"arena_extend_strategy": strategy})
            onnxruntime.create_and_register_allocator(info, arena)
            options.add_session_config_entry("session.use_env_allocators", "1")
        elif "." in name:
            options.add_session_config_entry(name, str(value))
        else:
            setattr(options, name, value)
    return options


def _bisector_feed(session, largest):
    """bisector: a feed at the largest sizes of every input, built from the session's own inputs
    (names, dtypes, fixed sizes); `largest` gives, per input position, the largest size of each
    varying axis."""
    dtypes = {
        "tensor(float)": numpy.float32,
        "tensor(float16)": numpy.float16,
        "tensor(double)": numpy.float64,
        "tensor(int64)": numpy.int64,
        "tensor(int32)": numpy.int32,
        "tensor(int8)": numpy.int8,
        "tensor(uint8)": numpy.uint8,
        "tensor(bool)": numpy.bool_,
    }
    feed = {}
    for i, meta in enumerate(session.get_inputs()):
        sizes = largest[i] if i < len(largest) else {}
        shape = [int(sizes.get(axis, d if isinstance(d, int) else 1)) for axis, d in enumerate(meta.shape)]
        feed[meta.name] = numpy.zeros(shape, dtype=dtypes.get(meta.type, numpy.float32))
    return feed


def _bisector_session(session, key):
    """bisector: this model's run options and warm-up (its entry in _BISECTOR_SESSIONS) on its
    session; other models' sessions are returned as they are."""
    settings = _BISECTOR_SESSIONS.get(key, {})
    if settings.get("provider_options") and "CUDAExecutionProvider" in session.get_providers():
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        session.set_providers(providers, [dict(settings["provider_options"]), {}])
    if settings.get("run_options"):
        run_options = onnxruntime.RunOptions()
        for name, value in settings["run_options"].items():
            run_options.add_run_config_entry(name, str(value))
        plain_run = session.run

        def run(output_names, input_feed, options=None, *args, **kwargs):
            return plain_run(output_names, input_feed, options or run_options, *args, **kwargs)

        session.run = run
    if settings.get("warm_up_largest") is not None:
        # The arena takes its full size now, not one step per new largest input; twice, because
        # the memory pattern is recorded on the first run and used from the second.
        feed = _bisector_feed(session, settings["warm_up_largest"])
        for _ in range(2):
            session.run(None, feed)
    return session


def _bisector_warm_up(session, largest=None):
    """bisector: run twice at the largest input of every range (the memory pattern is recorded on
    the first run, used from the second); largest: as _BISECTOR_WARM_UP_LARGEST."""
    feed = _bisector_feed(session, _BISECTOR_WARM_UP_LARGEST if largest is None else largest)
    for _ in range(2):
        session.run(None, feed)


def _bisector_guard(feed, axes=None, bounds=None):
    """bisector: refuse sizes outside the exported bounds, before the runtime sees them; axes and
    bounds: as _BISECTOR_DYNAMIC_AXES and _BISECTOR_BOUNDS."""
    axes = _BISECTOR_DYNAMIC_AXES if axes is None else axes
    bounds = _BISECTOR_BOUNDS if bounds is None else bounds
    for name, value in feed.items():
        for i, sym in axes.get(name, {}).items():
            lo, hi = bounds.get(sym, (0, float("inf")))
            if not lo <= value.shape[i] <= hi:
                raise ValueError(f"input {name} axis {i} ({sym}) = {value.shape[i]} is outside {lo}..{hi}")
    return feed


def _bisector_pad(feed, multiple, axes=None):
    """bisector: zero-pad the varying axes of each input up to a multiple, so the runtime sees few
    distinct shapes (fixed axes are left alone); axes: as _BISECTOR_DYNAMIC_AXES."""
    axes = _BISECTOR_DYNAMIC_AXES if axes is None else axes
    out = {}
    for name, value in feed.items():
        varying = axes.get(name, {})
        if varying:
            value = numpy.pad(value, [(0, (-n) % multiple if i in varying else 0) for i, n in enumerate(value.shape)])
        out[name] = value
    return out


def _bisector_crop(outputs, feed, padded, session=None, names=None, axes=None):
    """bisector: the outputs of a padded run cropped back to the sizes passed. An output axis is
    cropped when the graph names it with the symbol of a padded input axis, never when the graph
    says it is fixed; an axis the graph leaves unnamed, when it lines up with a padded input axis
    (the same axis at the input's rank, or the batch axis 0). Check your outputs."""
    axes = _BISECTOR_DYNAMIC_AXES if axes is None else axes
    passed, shapes = {}, []
    if session is not None:
        for meta in session.get_inputs():
            for i in axes.get(meta.name, {}):
                if meta.name in feed and i < len(meta.shape) and isinstance(meta.shape[i], str):
                    passed[meta.shape[i]] = feed[meta.name].shape[i]
        metas = {m.name: m for m in session.get_outputs()}
        shapes = [metas[n].shape for n in names] if names else [m.shape for m in session.get_outputs()]
    cropped = []
    for k, out in enumerate(outputs):
        if isinstance(out, numpy.ndarray):
            sizes = list(out.shape)
            shape = shapes[k] if k < len(shapes) else []
            for i in range(out.ndim):
                d = shape[i] if i < len(shape) else None
                if isinstance(d, int):
                    continue  # the graph says this axis is fixed
                if isinstance(d, str) and d in passed:
                    sizes[i] = min(sizes[i], passed[d])
                    continue
                for name, value in feed.items():
                    lines_up = i == 0 or out.ndim == value.ndim
                    if i in axes.get(name, {}) and lines_up and out.shape[i] == padded[name].shape[i]:
                        sizes[i] = min(sizes[i], value.shape[i])
            out = out[tuple(slice(0, n) for n in sizes)]
        cropped.append(out)
    return cropped


def _bisector_run(run, names, feed, multiple, *args, **kwargs):
    """bisector: run on the feed guarded and padded, then crop the outputs back to the sizes
    passed (see _bisector_crop)."""
    padded = _bisector_pad(_bisector_guard(feed), multiple)
    outputs = run(names, padded, *args, **kwargs)
    return _bisector_crop(outputs, feed, padded, getattr(run, "__self__", None), names)
