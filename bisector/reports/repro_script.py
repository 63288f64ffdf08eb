"""Standalone memory-leak repro, written by bisector into a repro bundle as repro.py.

It needs only torch, onnxruntime, numpy and psutil: never bisector, so it can be attached to an
upstream issue as it is. It reads bundle.json beside it, rebuilds the culprit region from the
copied model file (or, for an inference culprit, loads model.onnx), feeds the recorded inputs
(inputs.npz + inputs.json), repeats the stage's call and prints, every N calls, the process's RSS,
the C heap in use (glibc mallinfo2, after malloc_trim, exact where available) and the number of
live gc-tracked Python objects. A leak shows as a column that climbs on every line.

    python repro.py [--calls N] [--every N] [--all-shapes]

This file is copied verbatim (tests run it with bisector not importable), so it imports nothing
from bisector.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import importlib.util
import io
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


# -- meters -----------------------------------------------------------------------------------------


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        return libc
    except (OSError, AttributeError):
        return None  # musl, macOS, glibc < 2.33: no exact heap meter; RSS and objects still print


LIBC = _libc()


def heap_bytes() -> int | None:
    """In-use bytes of the C heap (small blocks + mmapped ones), after returning free pages."""
    if LIBC is None:
        return None
    try:
        LIBC.malloc_trim(0)
    except AttributeError:
        pass
    mi = LIBC.mallinfo2()
    return int(mi.uordblks + mi.hblkhd)


def rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def live_objects() -> int:
    return len(gc.get_objects())


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    sign = "-" if v < 0 else ""
    v = abs(v)
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if v >= scale:
            return f"{sign}{v / scale:.2f} {unit}"
    return f"{sign}{v:.0f} B"


# -- inputs -------------------------------------------------------------------------------------------


def decode(node: Any, arrays: Any, torch: Any) -> Any:
    t = node.get("t")
    if t == "tensor":
        return torch.from_numpy(arrays[node["key"]].copy())
    if t == "tuple":
        return tuple(decode(x, arrays, torch) for x in node["items"])
    if t == "list":
        return [decode(x, arrays, torch) for x in node["items"]]
    if t == "dict":
        return {k: decode(v, arrays, torch) for k, v in node["items"].items()}
    return node.get("v")


def load_steps(all_shapes: bool) -> list[dict[str, Any]]:
    """The recorded calls per input shape: [{"dims", "phase", "calls": [(args, kwargs), ...]}]."""
    import numpy as np

    spec = json.loads((HERE / "inputs.json").read_text())
    arrays = np.load(HERE / "inputs.npz", allow_pickle=False)
    try:
        import torch
    except ImportError:
        torch = None
    steps = []
    for s in spec["steps"]:
        if not all_shapes and s.get("phase") != "repeat":
            continue
        steps.append(
            {
                "dims": s.get("dims", {}),
                "phase": s.get("phase"),
                "calls": [(decode(a, arrays, torch), decode(k, arrays, torch)) for a, k in s["calls"]]
                if torch is not None
                else [],
                "raw": s["calls"],
                "arrays": arrays,
            }
        )
    if not steps and not all_shapes:  # fixed sizes: no repeated phase recorded apart
        return load_steps(True)
    return steps


def tensor_arrays(node: Any, arrays: Any, out: list[Any]) -> list[Any]:
    """The tensor inputs of an encoded call, in order, as numpy arrays (ONNX Runtime's feed)."""
    t = node.get("t")
    if t == "tensor":
        out.append(arrays[node["key"]])
    elif t in ("tuple", "list"):
        for x in node["items"]:
            tensor_arrays(x, arrays, out)
    elif t == "dict":
        for v in node["items"].values():
            tensor_arrays(v, arrays, out)
    return out


# -- the model ---------------------------------------------------------------------------------------


def build_region(cfg: dict[str, Any]) -> Any:
    """Import the copied model file (the original as a fallback), build the model, take the region."""
    import torch

    path = HERE / cfg["model_file"]
    if not path.is_file():
        path = Path(cfg["original_path"])  # relative to the project: run from its root
    sys.path.insert(0, str(path.parent))
    mod_name = path.stem
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    obj: Any = module
    for part in cfg["model_name"].split("."):
        obj = getattr(obj, part)
    kwargs = cfg.get("init_kwargs") or {}
    if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
        model = obj(**kwargs)
    elif isinstance(obj, torch.nn.Module):
        model = obj
    else:
        model = obj(**kwargs)
    model.eval()
    region = cfg.get("region") or ""
    return model.get_submodule(region) if region else model


def make_call(cfg: dict[str, Any], steps: list[dict[str, Any]]) -> Callable[[int], None]:
    stage = cfg["stage"]
    if stage == "inference":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        session = ort.InferenceSession(
            str(HERE / cfg.get("onnx", "model.onnx")), so, providers=["CPUExecutionProvider"]
        )
        names = [i.name for i in session.get_inputs()]
        feeds = []
        for s in steps:
            per_call = []
            for a, k in s["raw"]:
                arrays = tensor_arrays(a, s["arrays"], []) + tensor_arrays(k, s["arrays"], [])
                ours = cfg.get("input_names") or []
                if ours and len(ours) == len(arrays) and set(names) <= set(ours):
                    by_name = dict(zip(ours, arrays))
                    per_call.append({n: by_name[n] for n in names})
                else:
                    per_call.append(dict(zip(names, arrays)))
            feeds.append(per_call)

        def run(i: int) -> None:
            for feed in feeds[i % len(feeds)]:
                session.run(None, feed)

        return run

    import torch

    region = build_region(cfg)
    if stage == "export":
        dynamo = cfg.get("exporter") == "dynamo"

        def export(i: int) -> None:
            for args, kwargs in steps[i % len(steps)]["calls"]:
                buf = io.BytesIO()
                with torch.no_grad():
                    if dynamo:  # the torch.export-based exporter writes to a path
                        torch.onnx.export(
                            region,
                            tuple(args),
                            str(HERE / ".repro_export.onnx"),
                            kwargs=kwargs or None,
                            dynamo=True,
                            verbose=False,
                        )
                    else:
                        torch.onnx.export(region, tuple(args), buf, kwargs=kwargs or None, dynamo=False)

        return export

    def forward(i: int) -> None:
        with torch.no_grad():
            for args, kwargs in steps[i % len(steps)]["calls"]:
                region(*args, **kwargs)

    return forward


# -- the loop -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    cfg = json.loads((HERE / "bundle.json").read_text())
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=int(cfg.get("calls", 200)), help="calls to run after warm-up")
    p.add_argument("--every", type=int, default=int(cfg.get("every", 20)), help="print the counters every N calls")
    p.add_argument("--warmup", type=int, default=int(cfg.get("warmup", 4)), help="calls before the first reading")
    # Growth per new shape only shows while shapes are new: those bundles cycle through all of them.
    p.add_argument(
        "--all-shapes",
        action="store_true",
        default=bool(cfg.get("all_shapes")),
        help="cycle through every recorded shape, not only the repeated ones",
    )
    a = p.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    except ImportError:
        pass
    steps = load_steps(a.all_shapes)
    call = make_call(cfg, steps)
    what = f"{cfg.get('region') or '<root>'} ({cfg.get('region_type', '')}) from {cfg.get('spec', '')}"
    print(
        f"repro: {cfg['stage']} of {what}: {a.calls} calls over {len(steps)} input shape(s), counters every {a.every}"
    )
    print(f"       expected: flat after warm-up; bisector measured {cfg.get('measured', 'growth')}")
    for i in range(a.warmup):
        call(i)
    gc.collect()
    print(f"{'call':>6}  {'rss':>11}  {'heap':>11}  {'objects':>9}")
    rows = []
    for i in range(a.calls + 1):
        if i % a.every == 0 or i == a.calls:
            gc.collect()
            row = (i, rss_bytes(), heap_bytes(), live_objects())
            rows.append(row)
            print(f"{i:>6}  {fmt(row[1]):>11}  {fmt(row[2]):>11}  {row[3]:>9}", flush=True)
        if i < a.calls:
            call(a.warmup + i)
    if len(rows) >= 3:
        # Over the second half: first-call costs are behind, what still climbs is kept per call.
        mid = rows[len(rows) // 2]
        last = rows[-1]
        n = max(1, last[0] - mid[0])
        heap = "-" if last[2] is None or mid[2] is None else fmt((last[2] - mid[2]) / n)
        print(
            f"growth per call (second half): rss {fmt((last[1] - mid[1]) / n)}  heap {heap}  objects "
            f"{(last[3] - mid[3]) / n:+.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
