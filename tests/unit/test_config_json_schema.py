"""The JSON Schema of `[tool.bisector]` is derived from the option table (issue 23, item 1), and
accepts and refuses the documents ``validate`` does, as far as keys, types and choices go."""

from __future__ import annotations

import jsonschema
import pytest

from bisector.common.errors import UserError
from bisector.options.config import ToolTable, json_schema, validate
from bisector.options.table import OPTIONS, TABLE

DOCUMENTS = [
    ({"seed": 3, "stages": ["eager", "export"], "dims": {"B": "1:4", "T": 8}}, True),
    ({"stages": "eager", "exporter": "dynamo", "fresh": True, "timeout": 30.5, "init_kwargs": {"d": [1]}}, True),
    ({"models": [{"spec": "net.py:Net", "floor": ["eager=2KB"], "artifact": "net"}], "capture_cap": "1GB"}, True),
    ({"timout": 30}, False),  # a misspelt key
    ({"seed": "3"}, False),  # a string for a whole number
    ({"seed": True}, False),  # TOML's true is no number
    ({"fresh": 1}, False),
    ({"exporter": "onnxscript"}, False),  # not a choice
    ({"stages": ["eager", "compile"]}, False),
    ({"models": [{"inputs": ["x=B,4"]}]}, False),  # an entry without its spec
    ({"models": [{"spec": "net.py:Net", "capture_cap": "1GB"}]}, False),  # a table-only key in an entry
    ({"inputs": [1, 2]}, False),
]


@pytest.mark.parametrize(("document", "accepted"), DOCUMENTS)
def test_the_json_schema_and_validate_agree(document: dict, accepted: bool) -> None:
    errors = list(jsonschema.Draft202012Validator(json_schema()).iter_errors(document))
    assert (not errors) is accepted, errors
    if accepted:
        assert validate(ToolTable, document, "pyproject.toml", "[tool.bisector]") == document
    else:
        with pytest.raises(UserError):
            validate(ToolTable, document, "pyproject.toml", "[tool.bisector]")


def test_the_schema_names_every_key_of_the_table() -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["properties"]) == {o.name for o in OPTIONS.values() if TABLE in o.scope} | {"models"}
    entry = schema["properties"]["models"]["anyOf"][0]["items"]
    assert entry["required"] == ["spec"] and "capture_cap" not in entry["properties"]
