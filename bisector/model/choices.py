"""The choices of the options, light to import (the CLI lists them in --help without loading more);
and the one decision of which exporter a run uses."""

from __future__ import annotations

import re
from collections.abc import Callable

STAGES = ("eager", "export", "inference")
EXPORTERS = ("dynamo", "torchscript")
# The exporter bisector uses, and writes into new export files, when nothing else decides: the
# torch.export-based one, torch's own default from 2.9 on (patching.settings.installed_default_exporter).
DEFAULT_EXPORTER = "dynamo"
DEVICES = ("auto", "cpu", "cuda")
METRICS = ("rss", "uss")

# How a failed export stage names its exporter ("... with the torchscript exporter failed"): a failed
# stage has no curve whose metadata says it.
_EXPORTER_IN_MESSAGE = re.compile(rf"with the ({'|'.join(map(re.escape, EXPORTERS))}) exporter")


def choose_exporter(*named: str | None, default: str | Callable[[], str] | None = DEFAULT_EXPORTER) -> str | None:
    """The exporter a run uses: the first one named, callers giving theirs in order of precedence
    (a flag, then [tool.bisector]; a measured curve's, then the run's options, then a failure's
    message), else the default: a name, or a function asked only when nothing is named (the probe
    asks the installed torch), or None where a later layer decides."""
    for name in named:
        if name:
            return name
    return default() if callable(default) else default


def exporter_in_message(message: str) -> str | None:
    """The exporter a failure's message names, if any."""
    m = _EXPORTER_IN_MESSAGE.search(message or "")
    return m.group(1) if m else None
