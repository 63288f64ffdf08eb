"""Which exporter a run uses is decided by one function (issue 23, item 1): prepare, the fix
targets, the probe and the patch writers all ask model/choices.choose_exporter."""

from __future__ import annotations

from bisector.model.choices import DEFAULT_EXPORTER, choose_exporter, exporter_in_message


def test_the_first_exporter_named_wins() -> None:
    assert choose_exporter(None, "torchscript", "dynamo") == "torchscript"
    assert choose_exporter("", None) == DEFAULT_EXPORTER
    assert choose_exporter(None, default=None) is None  # prepare: the probe decides later


def test_the_default_function_is_asked_only_when_nothing_is_named() -> None:
    asked: list[bool] = []

    def installed() -> str:
        asked.append(True)
        return "torchscript"

    assert choose_exporter("dynamo", default=installed) == "dynamo" and not asked
    assert choose_exporter(None, default=installed) == "torchscript" and asked


def test_a_failure_message_names_its_exporter() -> None:
    assert exporter_in_message("export with the torchscript exporter failed: boom") == "torchscript"
    assert exporter_in_message("export with the dynamo exporter failed") == "dynamo"
    assert exporter_in_message("export with the onnxscript exporter failed") is None
    assert exporter_in_message("") is None
