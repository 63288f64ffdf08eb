"""The module tree as regions: dotted paths from named_modules(), the root is "". Plain data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Region:
    path: str
    type: str  # the module's class, qualified
    children: tuple[str, ...] = ()
    params: int = 0
    code_hash: str = ""  # the class's source
    weights_hash: str = ""  # the module's own parameters and buffers
    subtree_hash: str = ""  # code and weights of the region and everything below it
    called: bool = True  # did forward run during capture (an unused module cannot leak)

    @property
    def name(self) -> str:
        return self.path or "<root>"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "type": self.type,
            "children": list(self.children),
            "params": self.params,
            "code_hash": self.code_hash,
            "weights_hash": self.weights_hash,
            "subtree_hash": self.subtree_hash,
            "called": self.called,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Region:
        return cls(
            path=d["path"],
            type=d["type"],
            children=tuple(d.get("children", ())),
            params=int(d.get("params", 0)),
            code_hash=d.get("code_hash", ""),
            weights_hash=d.get("weights_hash", ""),
            subtree_hash=d.get("subtree_hash", ""),
            called=bool(d.get("called", True)),
        )


@dataclass(frozen=True)
class Tree:
    regions: Mapping[str, Region] = field(default_factory=dict)

    @classmethod
    def from_regions(cls, regions: Iterable[Region]) -> Tree:
        return cls({r.path: r for r in regions})

    @classmethod
    def from_paths(cls, paths: Iterable[str]) -> Tree:
        """A tree from dotted paths alone (tests, and trees described by hand)."""
        paths = list(dict.fromkeys(["", *paths]))
        kids: dict[str, list[str]] = {p: [] for p in paths}
        for p in paths:
            if p:
                kids.setdefault(parent_of(p), []).append(p)
        return cls({p: Region(path=p, type="", children=tuple(kids.get(p, []))) for p in kids})

    def __contains__(self, path: str) -> bool:
        return path in self.regions

    def __len__(self) -> int:
        return len(self.regions)

    def children(self, path: str) -> list[str]:
        """The regions directly below path that ran during capture. A child that never ran but
        holds modules that did (an nn.ModuleList or ModuleDict, whose members the parent calls
        itself) is looked through: its members take its place. A module nothing calls cannot leak."""
        region = self.regions.get(path)
        if region is None:
            return []
        out: list[str] = []
        for c in region.children:
            child = self.regions.get(c, Region(c, ""))
            if child.called:
                out.append(c)
            else:
                out.extend(self.children(c))
        return out

    def depth(self, path: str) -> int:
        return 0 if not path else path.count(".") + 1

    def ancestors(self, path: str) -> list[str]:
        """Root first, the path itself last."""
        out = [""]
        parts = path.split(".") if path else []
        for i in range(1, len(parts) + 1):
            out.append(".".join(parts[:i]))
        return out if path else [""]

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.regions.values()]

    @classmethod
    def from_json(cls, data: Iterable[Mapping[str, Any]]) -> Tree:
        return cls.from_regions(Region.from_json(d) for d in data)


def parent_of(path: str) -> str:
    return path.rpartition(".")[0] if "." in path else ""
