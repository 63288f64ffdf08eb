"""The choices of the options, light to import (the CLI lists them in --help without loading more)."""

STAGES = ("eager", "export", "inference")
EXPORTERS = ("dynamo", "torchscript")
DEVICES = ("auto", "cpu", "cuda")
METRICS = ("rss", "uss")
