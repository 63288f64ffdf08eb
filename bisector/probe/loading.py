"""Loading the user's model inside a child process.

The model file's folder goes on sys.path so its sibling imports work; a file inside a package
(folders with __init__.py) is imported as a member of that package so relative imports work too.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
import traceback
import types
from pathlib import Path
from typing import Any

from bisector.model.spec import ModelSpec


class WorkloadError(Exception):
    """The user's code (or a tool on it) failed at a known point; becomes a ProbeFailed."""

    def __init__(self, where: str, message: str, tb: str = "") -> None:
        super().__init__(message)
        self.where = where
        self.message = message
        self.tb = tb


def user_traceback(exc: BaseException, limit: int = 12) -> str:
    """The tail of a traceback, without bisector's and importlib's own frames."""
    frames = traceback.extract_tb(exc.__traceback__)
    keep = [
        f
        for f in frames
        if "/bisector/" not in f.filename and "importlib" not in f.filename and "<frozen" not in f.filename
    ]
    lines = traceback.format_list(keep[-6:]) if keep else []
    lines += traceback.format_exception_only(type(exc), exc)
    text = "".join(lines).rstrip()
    return "\n".join(text.splitlines()[-limit:])


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CLASS_PREFIX = re.compile(r"^<class '(?:[\w.]+\.)?(\w+)'>:\s*")


def one_line(exc: BaseException) -> str:
    """The line of an exception that says what went wrong (torch.onnx's errors open with advice
    and put the cause under "## Exception summary")."""
    body = _ANSI.sub("", str(exc))
    if "## Exception summary" in body:
        after = [ln for ln in body.split("## Exception summary", 1)[1].splitlines() if ln.strip()]
        if after:
            return _CLASS_PREFIX.sub(lambda m: f"{m.group(1)}: ", after[0].strip())[:300]
    text = f"{type(exc).__name__}: {body}".strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:300]


def import_model_file(path: str) -> types.ModuleType:
    file = Path(path).resolve()
    folder = file.parent
    package: list[str] = []
    root = folder
    while (root / "__init__.py").exists():
        package.insert(0, root.name)
        root = root.parent
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    if package:
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        return importlib.import_module(".".join(package + [file.stem]))
    name = file.stem
    if not name.isidentifier() or name in sys.modules:
        # Never shadow an installed module (a model file called torch.py, model.py twice...).
        name = f"_bisector_model_{hashlib.sha1(str(file).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_namespace(spec: ModelSpec) -> types.ModuleType:
    try:
        return import_model_file(spec.path)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure importing user code is the user's
        raise WorkloadError(
            "load", f"importing {Path(spec.path).name} failed: {one_line(exc)}", user_traceback(exc)
        ) from None


def build_model(spec: ModelSpec, namespace: types.ModuleType) -> Any:
    """Resolve NAME in the file and make an nn.Module of it (class, factory, or instance)."""
    import torch

    obj: Any = namespace
    for part in spec.name.split("."):
        if not hasattr(obj, part):
            raise WorkloadError("load", f"{spec.label}: {Path(spec.path).name} has no attribute {part!r}")
        obj = getattr(obj, part)
    kwargs = dict(spec.init_kwargs)
    try:
        if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
            model = obj(**kwargs)
            what = "constructor"
        elif isinstance(obj, torch.nn.Module):
            if kwargs:
                raise WorkloadError("load", f"{spec.label} is a module instance; it takes no --init-kwargs")
            model = obj
            what = "instance"
        elif callable(obj) and not isinstance(obj, type):
            model = obj(**kwargs)
            what = "factory"
        else:
            raise WorkloadError(
                "load", f"{spec.label} is {type(obj).__name__}, not an nn.Module class or a function returning one"
            )
    except (WorkloadError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001
        raise WorkloadError("load", f"building {spec.label} raised {one_line(exc)}", user_traceback(exc)) from None
    if not isinstance(model, torch.nn.Module):
        raise WorkloadError("load", f"{spec.label}: the {what} returned {type(model).__name__}, not an nn.Module")
    return model
