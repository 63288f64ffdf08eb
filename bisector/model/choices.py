"""The choices of the options, light to import (the CLI lists them in --help without loading more)."""

STAGES = ("eager", "export", "inference")
EXPORTERS = ("dynamo", "torchscript")
# The exporter bisector uses, and writes into new export files, when nothing else decides: the
# torch.export-based one, torch's own default from 2.9 on (patching.settings.installed_default_exporter).
DEFAULT_EXPORTER = "dynamo"
DEVICES = ("auto", "cpu", "cuda")
METRICS = ("rss", "uss")
