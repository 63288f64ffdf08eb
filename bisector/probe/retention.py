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
walker's own objects are skipped. The survey is survey.py's; the walk, the comparison of two
surveys and the tracer that runs them over a span are here.
"""

from __future__ import annotations

import gc
import sys
import time
import types
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bisector.probe.survey import Survey, display_module, file_of, nbytes_of, survey, tensor_type

MAX_DEPTH = 6  # back-reference levels walked above the new objects
MAX_FRONTIER = 48  # objects per level (get_referrers compares each referent with every one of them)
MAX_NEW = 200_000  # new objects looked at
TIME_BUDGET_S = 3.0  # per span, for the walk
TOP = 5  # paths reported
SIZED = 200  # new objects per path whose bytes are counted (the rest are taken to weigh the same)


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
    tops = _tops(new, new_ids)
    direct = _direct_referents(named)
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
    sample = _spread_sample(pending)
    own = skip | {id(new), id(new_ids), id(tops), id(pending), id(sample), id(found), id(direct)}
    extra = _climb(sample, names, direct, credit, own, deadline)
    for path, row in found.items():
        sized = row.pop("sized")
        row["bytes"] = round(row["bytes"] * row["objects"] / max(1, sized))
        row.update(extra.get(path, {}))
    return found


def _tops(new: list[Any], new_ids: Mapping[int, Any]) -> list[Any]:
    """The new objects no other new object refers to."""
    below: set[int] = set()
    for o in new:
        for c in gc.get_referents(o):
            if id(c) in new_ids and c is not o:
                below.add(id(c))
    return [o for o in new if id(o) not in below]


def _direct_referents(named: Survey) -> dict[int, str]:
    """The named containers' direct referents, by id, with their container's path (frozen
    containers are invisible to get_referrers)."""
    direct: dict[int, str] = {}
    for obj in named.objects.values():
        path = named.ids.get(id(obj))
        if path is None:
            continue
        for c in gc.get_referents(obj):
            direct.setdefault(id(c), path)
    return direct


def _spread_sample(pending: list[Any]) -> list[Any]:
    """A sample to climb from, spread over types, so that one kind of object does not crowd out
    the others."""
    by_type: dict[type, list[Any]] = {}
    for o in pending:
        by_type.setdefault(type(o), []).append(o)
    sample: list[Any] = []
    while len(sample) < MAX_FRONTIER and any(by_type.values()):
        for lst in by_type.values():
            if lst and len(sample) < MAX_FRONTIER:
                sample.append(lst.pop())
    return sample


def _climb(
    sample: list[Any],
    names: Mapping[int, str],
    direct: Mapping[int, str],
    credit: Callable[[Any, str], None],
    own: set[int],
    deadline: float,
) -> dict[str, dict[str, Any]]:
    """Climb get_referrers from the sample, level by level, to the first named container (or
    another module's global); credit each top it leads from to that path. own: ids of the
    walker's own objects, never climbed. Returns what is known of the paths outside the survey."""
    module_dicts = {id(vars(m)): display_module(n) for n, m in list(sys.modules.items()) if m is not None}
    extra: dict[str, dict[str, Any]] = {}
    parent: dict[int, Any] = {}
    origin: dict[int, list[Any]] = {id(o): [o] for o in sample}  # frontier object -> the tops it leads from
    frontier = sample
    visited = {id(o) for o in frontier}
    own = own | {id(parent), id(origin), id(visited), id(module_dicts), id(extra)}
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
                path = _module_global(r, kids[0], module_dicts[id(r)], extra)
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
    return extra


def _module_global(globals_: dict[str, Any], kid: Any, module: str, extra: dict[str, dict[str, Any]]) -> str:
    """Another module's global (a registry in a library, torch's own): named, and never climbed
    past (every function of the module refers to this dict as its globals)."""
    key = next((k for k, v in globals_.items() if v is kid), "?")
    path = f"{module}.{key}"
    extra.setdefault(path, {"root": "registry", "container": type(kid).__name__, "attr": str(key)})
    extra[path]["module"] = module
    return path


def _deep_new_size(top: Any, new_ids: Mapping[int, Any]) -> int:
    """Bytes of a new object and the new objects below it (tensor storages counted once)."""
    tensor = tensor_type()
    total, stack, seen, storages = 0, [top], {id(top)}, set()
    while stack and len(seen) < 10_000:
        o = stack.pop()
        total += sys.getsizeof(o, 0)
        if tensor is not None and isinstance(o, tensor):
            try:
                ptr = o.untyped_storage().data_ptr()
                if ptr not in storages:
                    storages.add(ptr)
                    total += nbytes_of(o) or 0
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
    rows = _surveyed_rows(before, after, found, calls, list(dims))
    rows += _walked_rows(after, found, calls)
    # Biggest first; a container that holds another one's growth ranks after the inner one.
    rows.sort(key=lambda r: (-(r["bytes_per_call"] or 0), -r["entries_per_call"], r["path"]))
    return rows[: TOP * 2]


def _entries_of_new_keys(before: Survey, found: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, int]]:
    """The bytes and objects of a dict's new entries (surveyed as paths of their own at the end),
    which are that dict's: {dict's path: bytes}, {dict's path: objects}."""
    inherited: dict[str, float] = {}
    adopted: dict[str, int] = {}
    for path, walked in found.items():
        if path not in before.held and "[" in path:
            owner = path[: path.rfind("[")]
            inherited[owner] = inherited.get(owner, 0.0) + walked["bytes"]
            adopted[owner] = adopted.get(owner, 0) + walked["objects"]
    return inherited, adopted


def _surveyed_rows(
    before: Survey, after: Survey, found: Mapping[str, Any], calls: int, dims: list[int]
) -> list[dict[str, Any]]:
    """A row for each surveyed container that grew with the calls."""
    # A container that gained less than this over the span is filling up to a bound or churning
    # (a deque(maxlen=N) still filling), not growing with the calls.
    least = max(2, calls / 4)
    inherited, adopted = _entries_of_new_keys(before, found)
    rows = []
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
                "file": h.file or (file_of(h.owner) if h.owner is not None else ""),
            }
        )
    return rows


def _walked_rows(after: Survey, found: Mapping[str, Any], calls: int) -> list[dict[str, Any]]:
    """A row for each container outside the survey that the walk found holding at least one new
    object per call (a library's registry)."""
    rows = []
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
    return rows


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
        after = survey(self.model, user, libs, keep_objects=True)
        skip = {id(self), id(self.open), id(self.out), id(before), id(before.held), id(after), id(after.held)}
        skip |= {id(after.objects), id(after.ids), id(start_ids), id(user), id(libs)}
        skip |= {id(h) for h in after.held.values()}
        new = new_objects(start_ids, skip)
        found = walk(new, after, skip)
        rows = compare(before, after, found, calls, dims)
        return {"calls": calls, "new_objects": len(new), "rows": rows}

    def result(self) -> dict[str, Any]:
        return {**self.out, "cost_s": round(self.cost_s, 3)}
