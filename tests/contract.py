"""The JSON contract as tests check it: a report validated against the schema bisector ships."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

# Commands whose --json output is a report (fixers --json and clean --json are listings).
REPORT_COMMANDS = ("measure", "find", "fix", "repair", "merge")


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    from bisector.common.contract import schema

    return jsonschema.Draft202012Validator(schema())


def contract_errors(data: Any) -> list[str]:
    """Every way data breaks the schema, each with the path to the offending value."""
    errors = _validator().iter_errors(data)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<top>'}: {e.message[:300]}" for e in errors]


def assert_contract(data: Mapping[str, Any], kind: str | None = None) -> None:
    errors = contract_errors(data)
    assert not errors, "the report breaks the JSON contract:\n  " + "\n  ".join(errors[:10])
    if kind is not None:
        assert data["report_kind"] == kind


def check_cli_output(args: tuple[str, ...], stdout: str) -> None:
    """A command's --json output follows the contract (when it printed one: a usage error prints
    nothing, and the test that caused it says so)."""
    command = next((a for a in args if not a.startswith("-")), None)
    if "--json" not in args or command not in REPORT_COMMANDS or not stdout.strip():
        return
    try:
        data = json.loads(stdout)
    except ValueError:
        return  # not JSON at all: the calling test's own json.loads says so, more plainly
    assert_contract(data, "repair" if command == "merge" else command)
