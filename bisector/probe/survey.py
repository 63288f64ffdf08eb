"""The survey half of retention (retention.py): the named containers a model's growth can live in,
with their sizes (len(), a tensor's rows, an lru_cache's currsize), taken at a span's start and
end: an attribute of a module in the model tree (its hook dicts included), a global of the user's
modules (or a library's registry), a class attribute, a closure cell, a default argument, an
lru_cache's cache, a logging handler's state. Growth held in one ever-larger tensor
(``torch.cat`` onto ``self.bank``) shows here, though no object count moves.

``survey`` is a pure function of a model and a list of modules, unit-tested without a probe.
"""

from __future__ import annotations

import functools
import gc
import logging
import sys
import types
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

DESCEND = 64  # a dict this small is looked into (self.cache[key] = [...])
NEST = 3  # levels of plain objects and dicts looked into below a root

ROOTS = ("module-attr", "global", "class-attr", "closure", "default-arg", "lru-cache", "hooks", "logging", "registry")
_CONTAINERS = (list, dict, set, deque)
_EXACT = frozenset({list, dict, set, deque, OrderedDict})
LRU_TYPE: Any = getattr(functools, "_lru_cache_wrapper", None)


@dataclass(frozen=True)
class Held:
    """A named container and its size at one moment."""

    root: str
    path: str
    container: str  # list, dict, Tensor, lru_cache, ModuleList, ...
    size: int  # len(), a tensor's rows, an lru_cache's currsize
    nbytes: int | None = None  # a tensor's storage bytes
    attr: str = ""
    module: str = ""  # import path of a global's (or class's, function's) module
    qualname: str = ""  # the class (class-attr, module-attr) or function
    file: str = ""  # the source file that defines the owner (module, class or function)
    owner: Any = None  # the class whose file is looked up only when a row is reported (inspect is slow)


@dataclass
class Survey:
    held: dict[str, Held]
    objects: dict[str, Any]  # path -> the container itself (held only at a span's end)
    ids: dict[int, str]  # id of a container -> its path


def file_of(obj: Any) -> str:
    try:
        import inspect

        return inspect.getsourcefile(obj) or ""
    except (TypeError, OSError):
        return ""


def tensor_type() -> Any:
    torch = sys.modules.get("torch")
    return torch.Tensor if torch is not None else None


def nbytes_of(t: Any) -> int | None:
    try:
        return int(t.untyped_storage().nbytes())
    except Exception:  # noqa: BLE001 - a meta, sparse or fake tensor has no plain storage
        try:
            return int(t.numel() * t.element_size())
        except Exception:  # noqa: BLE001
            return None


def _rows(t: Any) -> int:
    return int(t.shape[0]) if t.dim() else 1


class _Surveyor:
    def __init__(self, keep_objects: bool) -> None:
        self.held: dict[str, Held] = {}
        self.objects: dict[str, Any] = {}
        self.ids: dict[int, str] = {}
        self.keep = keep_objects
        self.tensor = tensor_type()
        self.seen_fn: set[int] = set()

    def add(self, obj: Any, held: Held) -> bool:
        """Record a container once (the first name found for it wins)."""
        if id(obj) in self.ids or held.path in self.held:
            return False
        self.held[held.path] = held
        self.ids[id(obj)] = held.path
        if self.keep:
            self.objects[held.path] = obj
        return True

    def value(self, obj: Any, base: Held, depth: int) -> None:
        """Record a value found at base.path, if it is something growth can live in."""
        t = self.tensor
        if t is not None and isinstance(obj, t):
            self.add(obj, _with(base, container="Tensor", size=_rows(obj), nbytes=nbytes_of(obj)))
            return
        if LRU_TYPE is not None and isinstance(obj, LRU_TYPE):
            self.lru(obj, base)
            return
        if isinstance(obj, _CONTAINERS):
            size = next(c.__len__(obj) for c in _CONTAINERS if isinstance(obj, c))  # never a subclass's own len()
            if not self.add(obj, _with(base, container=type(obj).__name__, size=size)):
                return
            if isinstance(obj, dict) and depth < NEST and len(obj) <= DESCEND:
                for k, v in list(obj.items()):
                    if isinstance(v, _CONTAINERS) or (t is not None and isinstance(v, t)):
                        self.value(v, _with(base, path=f"{base.path}[{_key(k)}]"), depth + 1)
            return
        if isinstance(obj, (types.FunctionType, types.MethodType)):
            self.function(obj)
            return
        nn = _nn()
        if nn is not None and isinstance(obj, nn.Module):
            return  # a module is named by its own place in the model tree
        if depth < NEST and _plain(obj):
            for attr, v in list(vars(obj).items()):
                self.value(v, _with(base, path=f"{base.path}.{attr}", attr=attr), depth + 1)

    def lru(self, fn: Any, base: Held) -> None:
        wrapped = getattr(fn, "__wrapped__", fn)
        module = display_module(getattr(wrapped, "__module__", "") or base.module)
        qualname = getattr(wrapped, "__qualname__", "") or base.qualname
        try:
            size = int(fn.cache_info().currsize)
        except Exception:  # noqa: BLE001
            return
        held = Held(
            "lru-cache",
            f"{module}.{qualname}.cache_info()",
            "lru_cache",
            size,
            attr=qualname.rsplit(".", 1)[-1],
            module=module,
            qualname=qualname,
            file=file_of(wrapped),
        )
        cache = _lru_dict(fn)
        if self.add(fn, held) and cache is not None:
            # Its entries are the cache dict's referents: the walk matches them to this path.
            self.ids[id(cache)] = held.path
            if self.keep:
                self.objects[held.path + "#cache"] = cache

    def function(self, fn: Any) -> None:
        fn = getattr(fn, "__func__", fn)
        if not isinstance(fn, types.FunctionType) or id(fn) in self.seen_fn:
            return
        self.seen_fn.add(id(fn))
        module, qualname = display_module(fn.__module__ or ""), fn.__qualname__
        base = Held("", "", "", 0, module=module, qualname=qualname, file=fn.__code__.co_filename)
        where = f"{module}.{qualname}.__defaults__"
        for var, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
            try:
                v = cell.cell_contents
            except ValueError:
                continue
            self.value(v, _with(base, root="closure", path=f"{module}.{qualname}.__closure__[{var}]", attr=var), 1)
        code = fn.__code__
        params = code.co_varnames[: code.co_argcount]
        for name, v in zip(params[len(params) - len(fn.__defaults__ or ()) :], fn.__defaults__ or ()):
            self.value(v, _with(base, root="default-arg", path=f"{where}[{name}]", attr=name), 1)
        for name, v in (fn.__kwdefaults__ or {}).items():
            self.value(v, _with(base, root="default-arg", path=f"{where}[{name}]", attr=name), 1)


def display_module(name: str) -> str:
    """A module's import path as people write it: a model file loaded under a private name
    (loading.py, to not shadow an installed module) goes by its file's stem."""
    if name.startswith("_bisector_model_"):
        file = getattr(sys.modules.get(name), "__file__", None) or ""
        if file:
            import os

            return os.path.splitext(os.path.basename(file))[0]
    return name


def _with(base: Held, **changes: Any) -> Held:
    from dataclasses import replace

    return replace(base, **changes)


def _key(k: Any) -> str:
    text = repr(k)
    return text if len(text) <= 40 else text[:37] + "..."


def _nn() -> Any:
    torch = sys.modules.get("torch")
    return getattr(torch, "nn", None) if torch is not None else None


def _plain(obj: Any) -> bool:
    """An instance of a user or library class with its own __dict__ (not a module, type, function)."""
    if isinstance(obj, (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, logging.Logger)):
        return False
    try:
        return isinstance(vars(obj), dict)
    except TypeError:
        return False


def _lru_dict(fn: Any) -> dict | None:
    """An lru_cache wrapper's cache: not an attribute, but one of its referents (the other dict is
    its __dict__)."""
    own = getattr(fn, "__dict__", None)
    for r in gc.get_referents(fn):
        if isinstance(r, dict) and r is not own:
            return r
    return None


HOOK_ATTRS_SUFFIX = "hooks"


def survey(
    model: Any,
    modules: Iterable[types.ModuleType],
    libraries: Iterable[types.ModuleType] = (),
    keep_objects: bool = False,
) -> Survey:
    """The named containers: the model tree's module attributes (hooks, buffers, parameter and
    module lists), the globals of ``modules`` (the user's; ``libraries``' are registries), their
    classes' attributes, their functions' closures, defaults and lru_caches, and logging's handlers."""
    s = _Surveyor(keep_objects)
    classes: list[type] = []
    if model is not None and hasattr(model, "named_modules"):
        for name, m in model.named_modules():
            _module_attrs(s, name, m)
            if type(m) not in classes:
                classes.append(type(m))
    for root, mods in (("global", modules), ("registry", libraries)):
        for mod in mods:
            _module_globals(s, mod, root, classes)
    for cls in classes:
        _class_attrs(s, cls)
    _logging(s)
    return Survey(s.held, s.objects, s.ids)


def _module_attrs(s: _Surveyor, name: str, m: Any) -> None:
    qualname = type(m).__qualname__
    base = Held(
        "module-attr", "", "", 0, module=display_module(type(m).__module__), qualname=qualname, file=file_of(type(m))
    )
    prefix = f"{name}." if name else ""
    state = vars(m)
    for attr, v in list(state.items()):
        if attr == "_modules":
            # A ModuleList/ModuleDict/Sequential that gains modules: its own _modules dict grows.
            if type(m).__name__ in ("ModuleList", "ModuleDict", "Sequential"):
                s.add(v, _with(base, path=name or "<root>", container=type(m).__name__, size=len(v), attr=name))
            continue
        if attr in ("_parameters", "_buffers"):
            if type(m).__name__ in ("ParameterList", "ParameterDict"):
                s.add(v, _with(base, path=name or "<root>", container=type(m).__name__, size=len(v), attr=name))
            for key, t in list(v.items()):
                if t is not None:
                    s.value(t, _with(base, path=f"{prefix}{key}", attr=key), 1)
            continue
        root = "hooks" if attr.endswith(HOOK_ATTRS_SUFFIX) and isinstance(v, dict) else "module-attr"
        s.value(v, _with(base, root=root, path=f"{prefix}{attr}", attr=attr), 1)
        if root == "hooks":
            for hook in list(v.values()):
                s.function(hook)
    # A module that gains attributes per call (setattr(self, f"out{i}", ...)): its __dict__ grows.
    s.add(state, _with(base, path=f"{prefix}__dict__", container="dict", size=len(state), attr="__dict__"))


def _module_globals(s: _Surveyor, mod: types.ModuleType, root: str, classes: list[type]) -> None:
    name = mod.__name__
    shown = display_module(name)
    base = Held(root, "", "", 0, module=shown, file=getattr(mod, "__file__", "") or "")
    library = root == "registry"
    for attr, v in list(vars(mod).items()):
        if attr.startswith("__") and attr.endswith("__"):
            continue
        if library:
            # A library's registries: its plain containers only, found by exact type. Anything
            # more (isinstance, its classes, its functions) wakes lazy proxies: transformers then
            # imports ~1,400 modules on the first survey and every later one sees them as growth.
            if type(v) in _EXACT:
                s.add(v, _with(base, path=f"{shown}.{attr}", attr=attr, container=type(v).__name__, size=len(v)))
            continue
        if isinstance(v, type):
            if v.__module__ == name and v not in classes:
                classes.append(v)
            continue
        if isinstance(v, types.FunctionType) and v.__module__ != name:
            continue  # imported from elsewhere: surveyed where it is defined, if at all
        s.value(v, _with(base, path=f"{shown}.{attr}", attr=attr), 1)


def _class_attrs(s: _Surveyor, cls: type) -> None:
    if cls.__module__ in ("builtins",) or cls.__module__.startswith(("torch.", "typing")):
        return
    base = Held(
        "class-attr", "", "", 0, module=display_module(cls.__module__), qualname=cls.__qualname__, file=file_of(cls)
    )
    for attr, v in list(vars(cls).items()):
        if attr.startswith("__") and attr.endswith("__"):
            continue
        if isinstance(v, (staticmethod, classmethod)):
            v = v.__func__
        if isinstance(v, types.FunctionType):
            s.function(v)
            continue
        s.value(v, _with(base, path=f"{cls.__qualname__}.{attr}", attr=attr), 1)


def _logging(s: _Surveyor) -> None:
    manager = logging.Logger.manager
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [lg for lg in list(manager.loggerDict.values()) if isinstance(lg, logging.Logger)]
    for lg in loggers:
        if not lg.handlers:
            continue
        name = lg.name
        base = Held("logging", "", "", 0, module="logging", qualname=name)
        s.add(lg.handlers, _with(base, path=f"logging:{name}.handlers", container="list", size=len(lg.handlers)))
        for i, h in enumerate(list(lg.handlers)):
            for attr, v in list(vars(h).items()):
                if attr in ("filters", "lock", "_closed"):
                    continue
                s.value(
                    v,
                    _with(base, path=f"logging:{name}.handlers[{i}].{attr}", attr=attr, qualname=type(h).__qualname__),
                    1,
                )
