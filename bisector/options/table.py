"""Every option a user gives bisector, in one table: its flags, its BISECTOR_* variable, its key in
`[tool.bisector]` and in a manifest entry, its type, choices and checks, and the keyword of
``prepare`` it becomes.

In the manner of Polygraphy's argument groups (polygraphy/tools/args/, where each group declares,
parses and checks its own options), the options are grouped by what they are about, and each row
says everything about one option. What used to be written by hand beside each other is derived from
here: the config schema and its JSON Schema (config.py), the checks of the variables
(environment.py), the stage flags the runtime check reads (runtime_check.py), and a manifest entry's
keywords for ``prepare`` (``entry_keywords``). tests/unit/test_option_table.py proves the CLI's
flags, variables and choices are the table's, and that each option reaches ``Prepared`` from each
of its sources: a flag, a variable, `[tool.bisector]` and a manifest entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from bisector.model.choices import DEVICES, EXPORTERS, METRICS, STAGES
from bisector.options import checks
from bisector.options.checks import MAX_SEED, MIN_MEM_CAP

Strs = Union[str, list[str]]
Size = Union[str, int]
SIZE_TEXT = 'a size such as "8GB" or a number of bytes'
SECONDS_TEXT = "a number of seconds"

# Where a config key is accepted: the top of [tool.bisector] (or of a manifest) and each model entry.
TABLE, ENTRY = "table", "entry"
BOTH = frozenset({TABLE, ENTRY})


def _strings(key: str) -> Callable[[Any], tuple[str, ...]]:
    return lambda value: tuple(checks.as_list(value, key))


@dataclass(frozen=True)
class Option:
    """One option, from every side it can be given."""

    name: str  # the [tool.bisector] and manifest-entry key; for a flag-only option, prepare's keyword
    type: Any = str  # the config value's type (the schema's); Any where no config key
    flags: tuple[str, ...] = ()  # its flags on the command line (the first is its name in messages)
    env: str | None = None  # the BISECTOR_* variable standing for the flag
    keyword: str | None = None  # prepare's keyword (pipeline.prepare.Options); None: not prepare's
    choices: tuple[str, ...] = ()  # the allowed values (the CLI's Choice, the schema's enum)
    check: checks.ValueCheck | None = None  # a config or manifest value (raises ValueError)
    env_check: checks.TextCheck | None = None  # the variable's text (returns what is wrong)
    expect: str = ""  # how a type error words the type, where the type alone says too little
    scope: frozenset[str] = BOTH  # where the config key is accepted; empty: no config key
    required: bool = False
    to_keyword: Callable[[Any], Any] | None = None  # a config value as prepare's keyword (default: as is)

    @property
    def config_key(self) -> str | None:
        return self.name if TABLE in self.scope else None

    @property
    def manifest_key(self) -> str | None:
        return self.name if ENTRY in self.scope else None

    def keyword_value(self, value: Any) -> Any:
        return self.to_keyword(value) if self.to_keyword else value

    def value_check(self) -> checks.ValueCheck | None:
        """The check of a config value: the row's own, else one of its choices."""
        if self.choices and self.check is None:
            return checks.choices(*self.choices)
        return self.check


@dataclass(frozen=True)
class OptionGroup:
    """Options about one thing, declared together (a Polygraphy argument group)."""

    title: str
    options: tuple[Option, ...]

    def keywords(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """This group's values in a manifest entry (or a config table) as prepare's keywords."""
        return {
            o.keyword: o.keyword_value(entry[o.manifest_key])
            for o in self.options
            if o.keyword is not None and o.manifest_key is not None and entry.get(o.manifest_key) is not None
        }


MODEL = OptionGroup(
    "the model and its inputs",
    (
        Option("spec", str, check=checks.spec, scope=frozenset({ENTRY}), required=True),
        Option("init_kwargs", dict[str, Any], ("--init-kwargs",), keyword="init_kwargs"),
        Option("inputs", Strs, ("--input", "-i"), keyword="inputs", check=checks.inputs, to_keyword=_strings("inputs")),
        Option(
            "dims",
            Union[Strs, dict[str, Union[str, int]]],
            ("--dim", "-d"),
            keyword="dims",
            check=checks.dims,
            to_keyword=_strings("dims"),
        ),
    ),
)
STAGES_RUN = OptionGroup(
    "what runs",
    (
        Option("stages", Strs, ("--stage", "-s"), "BISECTOR_STAGE", "stages", STAGES, to_keyword=_strings("stages")),
        Option("exporter", str, ("--exporter",), "BISECTOR_EXPORTER", "exporter", EXPORTERS),
        Option("device", str, ("--device",), "BISECTOR_DEVICE", "device", DEVICES),
        Option("keep_autograd", Any, ("--keep-autograd",), keyword="keep_autograd", scope=frozenset()),
        Option("tracemalloc", Any, ("--tracemalloc",), keyword="tracemalloc", scope=frozenset()),
    ),
)
MEASUREMENT = OptionGroup(
    "how it is measured and judged",
    (
        Option("metric", str, ("--metric",), "BISECTOR_METRIC", "metric", METRICS),
        Option("noise_rss", Size, ("--noise-rss",), keyword="noise_rss", check=checks.size(), expect=SIZE_TEXT),
        Option("noise_gpu", Size, ("--noise-gpu",), keyword="noise_gpu", check=checks.size(), expect=SIZE_TEXT),
        Option(
            "seed",
            int,
            ("--seed",),
            "BISECTOR_SEED",
            "seed",
            check=checks.between(0, MAX_SEED),
            env_check=checks.whole_text(0, MAX_SEED),
        ),
        Option("retries", int, ("--retries",), keyword="retries", check=checks.at_least(0)),
        # Detection floor targets: "4KB" for every stage, or a list of "STAGE=SIZE" (prepare.parse_floors).
        Option("floor", Strs, ("--floor",), keyword="floor", to_keyword=_strings("floor")),
        # Findings that fail the run (exit 1), e.g. "leak,shape-growth:unbounded" (see fail_on.py).
        Option(
            "fail_on",
            Strs,
            ("--fail-on",),
            "BISECTOR_FAIL_ON",
            check=checks.fail_on_kinds,
            env_check=checks.fail_on_text,
        ),
        # The memory budget bounded shape-growth's projected peak is judged against (fail_on.py).
        Option("budget", Size, ("--budget",), "BISECTOR_BUDGET", check=checks.size(), env_check=checks.size_text(1)),
    ),
)
PROBES = OptionGroup(
    "the probes",
    (
        Option(
            "jobs", Any, ("--jobs", "-j"), "BISECTOR_JOBS", "jobs", env_check=checks.whole_text(1), scope=frozenset()
        ),
        Option(
            "timeout",
            float,
            ("--timeout",),
            "BISECTOR_TIMEOUT",
            "timeout_s",
            check=checks.at_least(0, strict=True),
            env_check=checks.seconds_text,
            expect=SECONDS_TEXT,
        ),
        Option(
            "mem_cap",
            Size,
            ("--mem-cap",),
            "BISECTOR_MEM_CAP",
            "mem_cap",
            check=checks.size(MIN_MEM_CAP),
            env_check=checks.size_text(MIN_MEM_CAP),
            expect=SIZE_TEXT,
        ),
        Option("fresh", bool, ("--fresh",), "BISECTOR_FRESH", "fresh", env_check=checks.bool_text, to_keyword=bool),
    ),
)
FILES = OptionGroup(
    "where things are kept",
    (
        Option("run_dir", Any, ("--run-dir",), "BISECTOR_RUN_DIR", "run_dir", scope=frozenset()),
        Option("config", Any, ("--config",), "BISECTOR_CONFIG", "config", scope=frozenset()),
        Option("cache", Any, ("--no-cache",), keyword="cache", scope=frozenset()),
        # Recorded region inputs kept in the run directory, evicted oldest first past this (clean.py).
        Option(
            "capture_cap",
            Size,
            env="BISECTOR_CAPTURE_CAP",
            check=checks.size(),
            env_check=checks.size_text(1),
            expect=SIZE_TEXT,
            scope=frozenset({TABLE}),
        ),
    ),
)
PATCHES = OptionGroup(
    "the user's scripts and the patches",
    (
        # The user's own scripts: measured with the settings they apply, and patched by fix.
        Option("export_script", str, ("--export-script",), keyword="export_script"),
        Option("infer_script", str, ("--infer-script",), keyword="infer_script"),
        Option("artifact", str, keyword="artifact"),  # the model's name in those scripts (<artifact>.onnx)
        Option("fixers", Strs, ("--fixer",)),
        # Patches proven on the project (repair, fix): the command run in a shadow copy, its timeout.
        Option("check", str),
        Option("check_timeout", float, check=checks.at_least(0, strict=True), expect=SECONDS_TEXT),
        # Which kept fix goes in the patch: by rank (1 = best) or by a word of its summary.
        Option("pick", int, ("--pick",), check=checks.at_least(1)),
        Option("prefer", str),
    ),
)

GROUPS = (MODEL, STAGES_RUN, MEASUREMENT, PROBES, FILES, PATCHES)
OPTIONS: Mapping[str, Option] = {o.name: o for g in GROUPS for o in g.options}
# A manifest entry's keys that name files relative to the manifest: the caller resolves them.
PATH_KEYS = ("export_script", "infer_script")


def config_options(scope: str) -> list[Option]:
    """The options accepted as keys at the top of [tool.bisector] (TABLE) or in a model entry (ENTRY)."""
    return [o for o in OPTIONS.values() if scope in o.scope]


def entry_keywords(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A manifest entry's (or a config table's) values as ``prepare``'s keywords, for every option
    that is prepare's: what the CLI's flags give for the same option. Keys that are not prepare's
    (fail_on, budget, check, ...) are left to their users; PATH_KEYS come as written (relative to the
    manifest), for the caller to resolve."""
    return {k: v for group in GROUPS for k, v in group.keywords(entry).items()}


def environment_checks() -> dict[str, tuple[str, checks.TextCheck]]:
    """Variable -> (the flag it stands for, or its config key; the check of its text)."""
    return {
        o.env: (o.flags[0] if o.flags else o.name, o.env_check or checks.one_of_text(o.choices, several=o.type is Strs))
        for o in OPTIONS.values()
        if o.env and (o.env_check or o.choices)
    }
