"""Hierarchical, adaptive group testing over a module tree. Stdlib only; the oracle is injected.

Given a region known to misbehave (the root, for a stage whose measurement was not clean):

- its children are tested **as a group** by one probe (all of them run in one child, each with
  its own recorded inputs). A clean group means the region's own code between child calls is to
  blame (``own_code``);
- a misbehaving group is **halved** and each half tested again, so one leaking child among k
  siblings costs about 2*log2(k) probes instead of k. A clean left half proves the right half
  guilty without a probe of its own; when objects are counted exactly, a left half that leaks as
  many objects per call as the whole group proves the right half clean. A region blamed only by
  elimination is probed alone before it is named a culprit;
- the search **descends** into every misbehaving child and finds **all** culprits: the smallest
  regions that misbehave while none of their children do, and, when objects are counted exactly,
  a region that leaks more than its children run together (its own code leaks as well);
- a region that cannot be probed alone (it does not export alone, its inputs cannot be
  recorded, its probe crashes) is reported as such and the search goes on in its children.

Like picire and Hypothesis's shrinkers: the oracle is a function, its answers are cached by the
caller, and a search that is stopped keeps what it has learned (``SearchState``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from bisector.model.figures import Figures
from bisector.model.kinds import Kind

BAD_KINDS = (Kind.LEAK, Kind.SHAPE_GROWTH)
UNKNOWN_KINDS = (Kind.FAILED, Kind.CRASHED, Kind.INCONCLUSIVE)


@dataclass(frozen=True)
class Outcome:
    """What one probe of a set of regions said."""

    kind: str  # a Kind: leak, shape-growth, clean, inconclusive, failed or crashed (a plain str from JSON)
    figures: Figures = field(default_factory=Figures)  # a mapping is taken as its figures
    message: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.figures, Figures):
            object.__setattr__(self, "figures", Figures.of(self.figures))

    @property
    def bad(self) -> bool:
        return self.kind in BAD_KINDS

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "figures": dict(self.figures), "message": self.message}


Oracle = Callable[[tuple[str, ...]], Outcome]


class TreeLike(Protocol):
    def children(self, path: str) -> list[str]: ...


@dataclass(frozen=True)
class Finding:
    region: str
    kind: str
    own_code: bool
    outcome: Outcome


@dataclass
class SearchState:
    """Everything learned so far; complete only when the search ran to its end."""

    culprits: list[Finding] = field(default_factory=list)
    tested: dict[tuple[str, ...], Outcome] = field(default_factory=dict)
    unprobeable: dict[str, Outcome] = field(default_factory=dict)
    inconclusive: dict[str, Outcome] = field(default_factory=dict)
    complete: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def probes(self) -> int:
        return len(self.tested)

    def path_to(self, region: str) -> list[tuple[str, Outcome]]:
        """The outcomes of the region's ancestors that were probed alone, root first."""
        out = []
        parts = region.split(".") if region else []
        for i in range(len(parts) + 1):
            p = ".".join(parts[:i])
            if (p,) in self.tested:
                out.append((p, self.tested[(p,)]))
        return out


class Search:
    def __init__(
        self,
        tree: TreeLike,
        oracle: Oracle,
        executor: Executor | None = None,
        state: SearchState | None = None,
        own_code_beyond_children: bool = True,
    ) -> None:
        self.tree = tree
        self.oracle = oracle
        # Whether a region's probe and its children's add up, so that what a region leaks beyond
        # its children is its own code's. True where each region probe replays every recorded call
        # (eager); not for per-export probes, which trace a region once per step however many
        # times its parent calls it.
        self.own_code_beyond_children = own_code_beyond_children
        # With an executor, a region found guilty is explored at once, while its siblings are
        # still being tested: the same probes, in less wall time.
        self.executor = executor
        self.state = state or SearchState()
        self._futures: list[Any] = []
        self._futures_lock = threading.Lock()

    # -- the oracle, remembered ------------------------------------------------------------------

    def test(self, regions: Sequence[str]) -> Outcome:
        key = tuple(regions)
        with self.state.lock:
            known = self.state.tested.get(key)
        if known is not None:
            return known
        outcome = self.oracle(key)
        with self.state.lock:
            self.state.tested[key] = outcome
        return outcome

    def _known(self, regions: Sequence[str]) -> Outcome | None:
        with self.state.lock:
            return self.state.tested.get(tuple(regions))

    # -- the search ------------------------------------------------------------------------------

    def run(self, root: str, root_outcome: Outcome) -> SearchState:
        """Search below a region whose own probe (root_outcome) misbehaved."""
        with self.state.lock:
            self.state.tested.setdefault((root,), root_outcome)
        if root_outcome.bad:
            self._explore(root, root_outcome, inferred=False)
        while True:  # wait for explorations started in parallel (they may start more)
            with self._futures_lock:
                pending = [f for f in self._futures if not f.done()]
                if not pending:
                    errors = [f.exception() for f in self._futures if f.exception() is not None]
                    break
            for f in pending:
                f.result()
        if errors:
            raise errors[0]
        self.state.complete = True
        return self.state

    def _spawn(self, region: str, outcome: Outcome, inferred: bool) -> None:
        if self.executor is None:
            self._explore(region, outcome, inferred)
            return
        fut = self.executor.submit(self._explore, region, outcome, inferred)
        with self._futures_lock:
            self._futures.append(fut)

    def _explore(self, region: str, outcome: Outcome, inferred: bool) -> None:
        kids = self.tree.children(region)
        found = self._find_bad(kids) if kids else 0
        if found:
            # A region can leak in its own code as well as through a child. Objects add up, so
            # when the region leaks more than its children run together (one probe already
            # made), the rest is its own code's: a culprit too. (An outcome inferred by
            # elimination is the region's own here: the halves set aside leaked nothing.)
            rest = _leftover(outcome, self._known(kids)) if self.own_code_beyond_children else None
            if rest is not None:
                with self.state.lock:
                    self.state.culprits.append(Finding(region, rest.kind, own_code=True, outcome=rest))
            return
        if inferred:
            # Blamed by elimination only: probe it alone before naming it a culprit.
            outcome = self.test([region])
            if not outcome.bad:
                return
        with self.state.lock:
            self.state.culprits.append(Finding(region, outcome.kind, own_code=True, outcome=outcome))

    def _find_bad(self, group: list[str], inferred: Outcome | None = None) -> int:
        """Explore every member of group that misbehaves alone (or, for a member that cannot be
        probed alone, its misbehaving descendants). Returns how many were found.

        inferred: the group is known to misbehave without a probe of its own (its sibling half
        was clean), with this outcome."""
        if len(group) == 1:
            region = group[0]
            o = inferred if inferred is not None else self.test(group)
            if o.bad:
                self._spawn(region, o, inferred=inferred is not None)
                return 1
            if o.kind in (Kind.FAILED, Kind.CRASHED):
                with self.state.lock:
                    self.state.unprobeable[region] = o
                kids = self.tree.children(region)
                return self._find_bad(kids) if kids else 0
            if o.kind == Kind.INCONCLUSIVE:
                with self.state.lock:
                    self.state.inconclusive[region] = o
            return 0
        o = inferred if inferred is not None else self.test(group)
        if not o.bad and o.kind not in UNKNOWN_KINDS:
            return 0
        mid = len(group) // 2
        left, right = group[:mid], group[mid:]
        n_left = self._find_bad(left)
        left_outcome = self._known(left)
        if o.bad and left_outcome is not None and left_outcome.kind == Kind.CLEAN:
            # The group misbehaves and its left half is clean: the right half must.
            return self._find_bad(right, inferred=o)
        if o.bad and n_left and _accounts_for([self._known([r]) for r in left], o):
            # Exact counts: what the left half leaks is all the group leaks; the right is clean.
            return n_left
        return n_left + self._find_bad(right)


def _accounts_for(parts: list[Outcome | None], whole: Outcome) -> bool:
    """Objects are counted exactly, so growth adds up across regions run together: when the
    parts already found leak as many objects per call, and per new shape, as the whole group,
    nothing is left for the rest of it. Only for a whole judged on objects alone ("exact": its
    bytes did not grow): bytes are too noisy to add up."""
    if not whole.figures.exact:
        return False
    for key in ("objects_per_call", "objects_per_new_shape"):
        total = float(whole.figures.get(key) or 0.0)
        got = sum(float(p.figures.get(key) or 0.0) for p in parts if p is not None and p.bad)
        if got < total - 0.5:
            return False
    return True


def _leftover(whole: Outcome, children: Outcome | None) -> Outcome | None:
    """What a region leaks beyond its children run together, when both were judged on exact
    object counts; None when nothing clear is left (or bytes make it unknowable). The culprit's
    figures are its own share; region_objects_* keep what the region leaks alone, children
    included, which is what a probe of the region shows again after its own code is fixed."""
    # The children's probe must have measured them (not crashed, failed or inconclusive).
    if children is None or not children.bad or not whole.figures.exact or not children.figures.exact:
        return None
    rest, region = {}, {}
    for key in ("objects_per_call", "objects_per_new_shape"):
        w = float(whole.figures.get(key) or 0.0)
        rest[key] = w - max(0.0, float(children.figures.get(key) or 0.0))
        region[f"region_{key}"] = w
    # Python-level leaks keep whole objects: most of one more per call, or it is noise.
    if whole.kind == Kind.LEAK and rest["objects_per_call"] >= 0.8:
        kind = Kind.LEAK
    elif whole.kind == Kind.SHAPE_GROWTH and rest["objects_per_new_shape"] >= 0.8:
        kind = Kind.SHAPE_GROWTH
    else:
        return None
    return Outcome(kind, whole.figures.with_(**rest, **region, beyond_children=True), whole.message)


def search(
    tree: TreeLike, root_outcome: Outcome, oracle: Oracle, root: str = "", executor: Executor | None = None
) -> SearchState:
    """Find every culprit below root (see the module docstring)."""
    return Search(tree, oracle, executor).run(root, root_outcome)
