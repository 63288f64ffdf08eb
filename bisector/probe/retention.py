"""What holds the growth: retention paths from the objects a span of calls left alive to a named root.

Runs in the probe child of a retention probe (ProbeOptions.retention). Two views, combined:

- a **survey** of the named containers a model's growth can live in, with their sizes (len(), a
  tensor's rows, an lru_cache's currsize), taken at a span's start and end: an attribute of a
  module in the model tree (its hook dicts included), a global of the user's modules (or a
  library's registry), a class attribute, a closure cell, a default argument, an lru_cache's
  cache, a logging handler's state. Growth held in one ever-larger tensor (``torch.cat`` onto
  ``self.bank``) shows here, though no object count moves;
- a **back-reference walk**, as objgraph's find_backref_chain does: from the gc-tracked objects
  created in the span and still alive at its end, up ``gc.get_referrers`` to the first surveyed
  container. It says which container holds the new objects (and their bytes), also below a
  surveyed one (``self.cache[key]``). Objects frozen before the loop (the model, imported
  modules: gc.freeze in loop.py) are invisible to get_referrers, so the survey's containers are
  matched by their direct referents instead.

The walk is bounded: a few levels, a few dozen objects per level, a time budget; frames and the
walker's own objects are skipped. ``survey`` and ``attribute`` are pure functions of a model and a
list of modules, unit-tested without a probe.
"""

from __future__ import annotations

import functools
import gc
import logging
import sys
import time
import types
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 6  # back-reference levels walked above the new objects
MAX_FRONTIER = 48  # objects per level (get_referrers compares each referent with every one of them)
MAX_NEW = 200_000  # new objects looked at
TIME_BUDGET_S = 3.0  # per span, for the walk
DESCEND = 64  # a dict this small is looked into (self.cache[key] = [...])
NEST = 3  # levels of plain objects and dicts looked into below a root
TOP = 5  # paths reported
SIZED = 200  # new objects per path whose bytes are counted (the rest are taken to weigh the same)

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


def _file_of(obj: Any) -> str:
    try:
        import inspect

        return inspect.getsourcefile(obj) or ""
    except (TypeError, OSError):
        return ""


def _tensor_type() -> Any:
    torch = sys.modules.get("torch")
    return torch.Tensor if torch is not None else None


def _nbytes(t: Any) -> int | None:
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
        self.tensor = _tensor_type()
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
            self.add(obj, _with(base, container="Tensor", size=_rows(obj), nbytes=_nbytes(obj)))
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
            file=_file_of(wrapped),
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


def survey(model: Any, modules: Iterable[types.ModuleType], libraries: Iterable[types.ModuleType] = ()) -> Survey:
    return _survey(model, modules, libraries, keep_objects=False)


def _survey(
    model: Any, modules: Iterable[types.ModuleType], libraries: Iterable[types.ModuleType], keep_objects: bool
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
        "module-attr", "", "", 0, module=display_module(type(m).__module__), qualname=qualname, file=_file_of(type(m))
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
        "class-attr", "", "", 0, module=display_module(cls.__module__), qualname=cls.__qualname__, file=_file_of(cls)
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


# -- the walk ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """A span's growth by path: what the survey saw grow and what the walk found holding new objects."""

    calls: int
    rows: tuple[dict[str, Any], ...]


def new_objects(start_ids: set[int] | frozenset[int], skip: set[int]) -> list[Any]:
    """gc-tracked objects alive now and not at the span's start (frames and the walker's own left out)."""
    out: list[Any] = []
    everything = gc.get_objects()
    torch = sys.modules.get("torch")
    # The tensor meter's storage objects (probe/meters.py): its own, held by torch, not by a container.
    storage = torch.UntypedStorage if torch is not None else types.FrameType
    for o in everything:
        if (
            o is everything
            or o is out
            or id(o) in start_ids
            or id(o) in skip
            or isinstance(o, (types.FrameType, storage))
        ):
            continue
        out.append(o)
        if len(out) >= MAX_NEW:
            break
    return out


def walk(
    new: list[Any], named: Survey, skip: set[int], budget_s: float = TIME_BUDGET_S, into: dict[int, str] | None = None
) -> dict[str, Any]:
    """Which named container holds the new objects: {path: {"objects": n, "bytes": b}}.
    into: filled with id(top object) -> the path credited with it (probe/objects.py asks per object).

    named: a survey taken with its containers kept (the span's end). The walk starts from the new
    objects that no other new object refers to (the tops), matches those a named container refers
    to directly, then climbs get_referrers level by level for the rest."""
    names = named.ids
    deadline = time.perf_counter() + budget_s
    new_ids = {id(o): o for o in new}
    below: set[int] = set()
    for o in new:
        for c in gc.get_referents(o):
            if id(c) in new_ids and c is not o:
                below.add(id(c))
    tops = [o for o in new if id(o) not in below]
    # The named containers' direct referents (frozen containers are invisible to get_referrers).
    direct: dict[int, str] = {}
    for obj in named.objects.values():
        path = names.get(id(obj))
        if path is None:
            continue
        for c in gc.get_referents(obj):
            direct.setdefault(id(c), path)
    found: dict[str, dict[str, Any]] = {}

    def credit(top: Any, path: str) -> None:
        if into is not None:
            into[id(top)] = path
        row = found.setdefault(path, {"objects": 0, "bytes": 0, "sized": 0})
        row["objects"] += 1
        if row["sized"] < SIZED:  # the rest are taken to weigh as much as those sized
            row["sized"] += 1
            row["bytes"] += _deep_new_size(top, new_ids)

    pending: list[Any] = []
    for o in tops:
        path = names.get(id(o)) or direct.get(id(o))
        if path is not None:
            credit(o, path)
        else:
            pending.append(o)
    # Climb for the rest: a sample, spread over types, so that one kind of object does not crowd out the others.
    by_type: dict[type, list[Any]] = {}
    for o in pending:
        by_type.setdefault(type(o), []).append(o)
    sample: list[Any] = []
    while len(sample) < MAX_FRONTIER and any(by_type.values()):
        for lst in by_type.values():
            if lst and len(sample) < MAX_FRONTIER:
                sample.append(lst.pop())
    module_dicts = {id(vars(m)): display_module(n) for n, m in list(sys.modules.items()) if m is not None}
    extra: dict[str, dict[str, Any]] = {}
    parent: dict[int, Any] = {}
    origin: dict[int, list[Any]] = {id(o): [o] for o in sample}  # frontier object -> the tops it leads from
    frontier = sample
    visited = {id(o) for o in frontier}
    own = skip | {id(new), id(new_ids), id(tops), id(pending), id(sample), id(parent), id(origin), id(visited)}
    own |= {id(module_dicts), id(extra), id(found), id(direct)}
    for _ in range(MAX_DEPTH):
        if not frontier or time.perf_counter() > deadline:
            break
        own.add(id(frontier))
        refs = gc.get_referrers(*frontier)
        own.add(id(refs))
        fids = {id(o): o for o in frontier}
        nxt: list[Any] = []
        for r in refs:
            if id(r) in own or isinstance(r, types.FrameType) or id(r) in visited:
                continue
            kids = [c for c in gc.get_referents(r) if id(c) in fids]
            if not kids:
                continue
            leads = [t for c in kids for t in origin.get(id(c), [])]
            path = names.get(id(r)) or direct.get(id(r))
            if path is None and id(r) in module_dicts:
                # Another module's global (a registry in a library, torch's own): named, and never
                # climbed past (every function of the module refers to this dict as its globals).
                key = next((k for k, v in r.items() if v is kids[0]), "?")
                path = f"{module_dicts[id(r)]}.{key}"
                extra.setdefault(path, {"root": "registry", "container": type(kids[0]).__name__, "attr": str(key)})
                extra[path]["module"] = module_dicts[id(r)]
            if path is not None:
                for t in leads:
                    if id(t) not in parent:
                        parent[id(t)] = path
                        credit(t, path)
                continue
            visited.add(id(r))
            if len(nxt) < MAX_FRONTIER:
                origin[id(r)] = leads
                nxt.append(r)
        frontier = nxt
        del refs
    for path, row in found.items():
        sized = row.pop("sized")
        row["bytes"] = round(row["bytes"] * row["objects"] / max(1, sized))
        row.update(extra.get(path, {}))
    return found


def _deep_new_size(top: Any, new_ids: Mapping[int, Any]) -> int:
    """Bytes of a new object and the new objects below it (tensor storages counted once)."""
    tensor = _tensor_type()
    total, stack, seen, storages = 0, [top], {id(top)}, set()
    while stack and len(seen) < 10_000:
        o = stack.pop()
        total += sys.getsizeof(o, 0)
        if tensor is not None and isinstance(o, tensor):
            try:
                ptr = o.untyped_storage().data_ptr()
                if ptr not in storages:
                    storages.add(ptr)
                    total += _nbytes(o) or 0
            except Exception:  # noqa: BLE001
                pass
        for c in gc.get_referents(o):
            if id(c) in new_ids and id(c) not in seen:
                seen.add(id(c))
                stack.append(c)
    return total


def classify_keys(keys: Iterable[Any], dims: Iterable[int]) -> str:
    """What new keys look like: "input lengths", "shapes", "dtypes", "devices", or ""."""
    dims = {int(d) for d in dims}
    torch = sys.modules.get("torch")

    def kind(k: Any) -> str:
        if isinstance(k, tuple) and len(k) == 1:
            k = k[0]
        if torch is not None and isinstance(k, torch.dtype):
            return "dtypes"
        if torch is not None and isinstance(k, torch.device):
            return "devices"
        if isinstance(k, str) and (k in ("cpu", "cuda", "mps", "meta") or k.startswith(("cuda:", "mps:"))):
            return "devices"
        if isinstance(k, bool):
            return ""
        if isinstance(k, int):
            return "input lengths" if k in dims else ""
        if isinstance(k, tuple):
            parts = [kind(p) for p in k]
            for special in ("dtypes", "devices"):
                if special in parts:
                    return special
            if k and all(isinstance(p, int) and not isinstance(p, bool) for p in k):
                return "shapes" if len(k) >= 2 or (torch is not None and isinstance(k, torch.Size)) else kind(k[0])
            if "shapes" in parts:
                return "shapes"
            if "input lengths" in parts:
                return "input lengths"
        return ""

    votes = Counter(kind(k) for k in keys)
    if not votes:
        return ""
    best, n = max(votes.items(), key=lambda kv: (kv[0] != "", kv[1]))
    return best if best and n * 2 >= sum(votes.values()) else ""


def _new_keys(obj: Any, grew: int) -> list[Any]:
    if isinstance(obj, dict) and grew > 0:
        keys = list(obj)
        return keys[-grew:]
    return []


def compare(before: Survey, after: Survey, found: Mapping[str, Any], calls: int, dims: Iterable[int]) -> list[dict]:
    """Rows for the paths that grew over ``calls`` calls (or hold at least one new object per call)."""
    calls = max(1, calls)
    # A container that gained less than this over the span is filling up to a bound or churning
    # (a deque(maxlen=N) still filling), not growing with the calls.
    least = max(2, calls / 4)
    dims = list(dims)
    rows = []
    # The bytes of a dict's new entries (surveyed as paths of their own at the end) are that dict's.
    inherited: dict[str, float] = {}
    adopted: dict[str, int] = {}
    for path, walked in found.items():
        if path not in before.held and "[" in path:
            owner = path[: path.rfind("[")]
            inherited[owner] = inherited.get(owner, 0.0) + walked["bytes"]
            adopted[owner] = adopted.get(owner, 0) + walked["objects"]
    for path, h in after.held.items():
        b = before.held.get(path)
        if b is None and "[" in path:
            continue  # a new entry of a surveyed dict: that dict's growth
        grew = h.size - (b.size if b is not None else 0)
        db = None
        if h.nbytes is not None:
            db = h.nbytes - ((b.nbytes or 0) if b is not None else 0)
        walked = found.get(path)
        if h.container == "Tensor":
            if grew < least and (db or 0) <= 0:
                continue
        elif grew < least and (walked is None or walked["objects"] < calls):
            continue
        elif h.root == "registry" and (walked or {}).get("objects", 0) + adopted.get(path, 0) < least:
            continue  # a library's mapping whose size moves as it loads lazily: new objects in it, or nothing
        if grew <= 0 and walked is not None:
            grew = walked["objects"]  # held below this container (self.cache[key].append)
        obj = after.objects.get(path + "#cache", after.objects.get(path))
        if h.container == "Tensor":
            nbytes = max(0, db or 0)  # the storage's growth (the walk would count the whole new tensor)
        else:
            nbytes = (walked["bytes"] if walked else 0) + inherited.get(path, 0.0)
        rows.append(
            {
                "root": h.root,
                "path": path,
                "container": h.container,
                "growth": grew,
                "entries_per_call": round(grew / calls, 3),
                "bytes_per_call": round(nbytes / calls, 1) if nbytes else None,
                "keys": classify_keys(_new_keys(obj, grew), dims),
                "attr": h.attr,
                "module": h.module,
                "qualname": h.qualname,
                "file": h.file or (_file_of(h.owner) if h.owner is not None else ""),
            }
        )
    for path, walked in found.items():
        if path in after.held or "root" not in walked or walked["objects"] < calls:
            continue
        rows.append(
            {
                "root": walked["root"],
                "path": path,
                "container": walked["container"],
                "growth": walked["objects"],
                "entries_per_call": round(walked["objects"] / calls, 3),
                "bytes_per_call": round(walked["bytes"] / calls, 1) if walked["bytes"] else None,
                "keys": "",
                "attr": walked["attr"],
                "module": walked.get("module", ""),
                "qualname": "",
                "file": "",
            }
        )
    # Biggest first; a container that holds another one's growth ranks after the inner one.
    rows.sort(key=lambda r: (-(r["bytes_per_call"] or 0), -r["entries_per_call"], r["path"]))
    return rows[: TOP * 2]


class RetentionTracer:
    """Surveys at a span's start and end; walks at its end. spans: (phase, first step, last step)."""

    def __init__(
        self,
        model: Any,
        modules: Callable[[], tuple[list[types.ModuleType], list[types.ModuleType]]],
        spans: list[tuple[str, int, int]],
        dims: Callable[[int, int], list[int]],
    ) -> None:
        self.model = model
        self.modules = modules
        self.spans = spans
        self.dims = dims
        self.open: dict[str, tuple[Survey, frozenset[int]]] = {}
        self.out: dict[str, Any] = {}
        self.cost_s = 0.0

    def before(self, i: int) -> None:
        for phase, first, _ in self.spans:
            if i == first:
                t0 = time.perf_counter()
                gc.collect()
                user, libs = self.modules()
                snap = survey(self.model, user, libs)
                ids = frozenset(id(o) for o in gc.get_objects())
                self.open[phase] = (snap, ids)
                self.cost_s += time.perf_counter() - t0

    def after(self, i: int) -> None:
        for phase, first, last in self.spans:
            if i == last and phase in self.open:
                t0 = time.perf_counter()
                before, start_ids = self.open.pop(phase)
                self.out[phase] = self.end(before, start_ids, last - first + 1, self.dims(first, last))
                del before, start_ids
                self.cost_s += time.perf_counter() - t0

    def end(self, before: Survey, start_ids: frozenset[int], calls: int, dims: list[int]) -> dict[str, Any]:
        gc.collect()
        user, libs = self.modules()
        after = _survey(self.model, user, libs, keep_objects=True)
        skip = {id(self), id(self.open), id(self.out), id(before), id(before.held), id(after), id(after.held)}
        skip |= {id(after.objects), id(after.ids), id(start_ids), id(user), id(libs)}
        skip |= {id(h) for h in after.held.values()}
        new = new_objects(start_ids, skip)
        found = walk(new, after, skip)
        rows = compare(before, after, found, calls, dims)
        return {"calls": calls, "new_objects": len(new), "rows": rows}

    def result(self) -> dict[str, Any]:
        return {**self.out, "cost_s": round(self.cost_s, 3)}
