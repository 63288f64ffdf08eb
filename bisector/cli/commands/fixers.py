"""`bisector fixers`: the fixers and plugins, what each changes and addresses."""

from __future__ import annotations

import json
import sys

from bisector.cli.exit_codes import EXIT_CLEAN
from bisector.cli.flags import JsonOpt


def fixer_names() -> list[str]:
    from bisector.pipeline.run import known_fixers

    return known_fixers()


def list_fixers(json_out: JsonOpt = False) -> int:
    """List the fixers: what each changes, and the stages and verdicts it addresses; a plugin
    that fails to load as broken, with its error."""
    from bisector.fixers import family_of, load

    registry = load()
    rows = [
        {
            "name": f.name,
            "description": f.description,
            "stages": list(f.stages),
            "kinds": list(f.kinds),
            "family": family_of(f) or None,
            "status": "ok",
            "error": None,
        }
        for f in registry.fixers
    ]
    rows += [
        {
            "name": b.name,
            "description": b.value,
            "stages": [],
            "kinds": [],
            "family": None,
            "status": "broken",
            "error": b.error,
        }
        for b in registry.broken
    ]
    if json_out:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return EXIT_CLEAN
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        if r["status"] == "broken":
            sys.stdout.write(f"{r['name']:<{width}}  broken: {r['error']}\n")
            continue
        sys.stdout.write(
            f"{r['name']:<{width}}  {'/'.join(r['stages']):<16} {'/'.join(r['kinds']):<18} {r['description']}\n"
        )
    families: dict[str, list[str]] = {}
    for r in rows:
        if r["family"]:
            families.setdefault(r["family"], []).append(r["name"])
    for family, members in families.items():
        sys.stdout.write(f"{family:<{width}}  selects {', '.join(members)}\n")
    return EXIT_CLEAN
