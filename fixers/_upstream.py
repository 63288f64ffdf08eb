"""Known toolchain leaks: what a toolchain-leak's figures say of the upstream bug behind it.

Matched on what the traced probe named (the site of the objects or bytes torch keeps, the
module's class): a workaround's comment and the hint name the bug when it is known, else the
toolchain file that keeps the growth.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# (a text the owners' sites or the reasons contain, the module class it needs or "", what it is)
KNOWN = (
    (
        "torchscript_exporter/utils.py",
        "ScriptModule",
        "pytorch/pytorch#82532 (TorchScript export of a scripted module keeps its cloned parameters)",
    ),
    ("torch/fx/graph.py", "", "torch.fx keeping each exported graph's source (torch/fx/graph.py)"),
)


def _texts(figures: Mapping[str, Any]) -> list[str]:
    repeat = (figures.get("owners") or {}).get("repeat") or {}
    out = [str(r) for r in figures.get("reasons") or ()]
    out += [str(s.get("where", "")) for s in (repeat.get("sites") or {}).get("toolchain") or ()]
    out += [str(s.get("where", "")) for s in ((repeat.get("objects") or {}).get("sites") or {}).get("toolchain") or ()]
    return out


def known_bug(figures: Mapping[str, Any], region_type: str = "") -> str | None:
    """The upstream bug a toolchain-leak's figures match, or None."""
    texts = _texts(figures)
    for needle, cls, what in KNOWN:
        if any(needle in t for t in texts) and (not cls or cls in region_type):
            return what
    return None


def works_around(figures: Mapping[str, Any], region_type: str = "") -> str:
    """What a workaround's comment says it works around: the known bug, else the toolchain's site."""
    bug = known_bug(figures, region_type)
    if bug:
        return bug
    sites = [t for t in _texts(figures)[len(figures.get("reasons") or ()) :] if t]
    return f"the exporter's own growth at {sites[0]}" if sites else "the exporter's own growth per export"
