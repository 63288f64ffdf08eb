"""Helpers bisector writes into a user's serving script, as real, tested functions.

They are copied into the script with ``inspect.getsource`` (``onnxruntime.``/``numpy.`` renamed to
the aliases the script already imports) and read their settings from one per-model table,
``_BISECTOR_SESSIONS``, keyed by the model's name: a script that builds every model's session in
one place gets each model's settings, and only its own. Feeds are built from the session itself
(``session.get_inputs()``: names, dtypes, ranks), never from a hard-coded shape or dtype.
"""

from __future__ import annotations

import numpy
import onnxruntime

_BISECTOR_SESSIONS: dict = {}  # replaced by the table written into the user's script

# What a serving script gets, in this order (the session wrapper calls the feed helper).
SERVING_HELPERS = ("_bisector_session_options", "_bisector_session", "_bisector_feed")


def _bisector_session_options(key, options=None):
    """bisector: the session options measured for this model (its entry in _BISECTOR_SESSIONS); other models' sessions are left as they were."""
    settings = _BISECTOR_SESSIONS.get(key, {}).get("session_options", {})
    if not settings:
        return options
    if options is None:
        options = onnxruntime.SessionOptions()
    for name, value in settings.items():
        if name == "arena_extend_strategy":
            strategy = {"kNextPowerOfTwo": 0, "kSameAsRequested": 1}.get(value, value)
            info = onnxruntime.OrtMemoryInfo("Cpu", onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, onnxruntime.OrtMemType.DEFAULT)
            onnxruntime.create_and_register_allocator(info, onnxruntime.OrtArenaCfg({"arena_extend_strategy": strategy}))
            options.add_session_config_entry("session.use_env_allocators", "1")
        elif "." in name:
            options.add_session_config_entry(name, str(value))
        else:
            setattr(options, name, value)
    return options


def _bisector_feed(session, largest):
    """bisector: a feed at the largest sizes of every input, built from the session's own inputs (names, dtypes, fixed sizes); `largest` gives, per input position, the largest size of each varying axis."""
    dtypes = {"tensor(float)": numpy.float32, "tensor(float16)": numpy.float16, "tensor(double)": numpy.float64, "tensor(int64)": numpy.int64,
              "tensor(int32)": numpy.int32, "tensor(int8)": numpy.int8, "tensor(uint8)": numpy.uint8, "tensor(bool)": numpy.bool_}
    feed = {}
    for i, meta in enumerate(session.get_inputs()):
        sizes = largest[i] if i < len(largest) else {}
        shape = [int(sizes.get(axis, d if isinstance(d, int) else 1)) for axis, d in enumerate(meta.shape)]
        feed[meta.name] = numpy.zeros(shape, dtype=dtypes.get(meta.type, numpy.float32))
    return feed


def _bisector_session(session, key):
    """bisector: this model's run options and warm-up (its entry in _BISECTOR_SESSIONS) on its session; other models' sessions are returned as they are."""
    settings = _BISECTOR_SESSIONS.get(key, {})
    if settings.get("provider_options") and "CUDAExecutionProvider" in session.get_providers():
        session.set_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], [dict(settings["provider_options"]), {}])
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
