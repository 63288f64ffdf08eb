"""Switch exporter when a leak is tied to one: the TorchScript-based exporter calls custom
symbolic functions and keeps scripted-module state (pytorch/pytorch#82532); the
torch.export-based one restores every module attribute it traced (so a list on a module is
rolled back) and never calls symbolic. What one exporter leaks the other may not."""

from __future__ import annotations

from bisector.fixers.base import LEAK, TOOLCHAIN_LEAK, Candidate, Example, FixTarget


class ExporterSwitch:
    name = "exporter-switch"
    description = "export with the other exporter (torch.export-based <-> TorchScript-based)"
    stages = ("export",)
    kinds = (LEAK, TOOLCHAIN_LEAK)

    def propose(self, target: FixTarget) -> list[Candidate]:
        if target.exporter == "torchscript":
            return [
                Candidate(
                    self.name,
                    "export with the torch.export-based exporter (dynamo=True): it never calls symbolic functions",
                    probe={"exporter": "dynamo"},
                )
            ]
        return [
            Candidate(
                self.name,
                "export with the TorchScript-based exporter (dynamo=False): when the leak is the torch.export "
                "path's own",
                probe={"exporter": "torchscript"},
            )
        ]

    examples = (
        Example(
            "a symbolic leak under TorchScript", FixTarget("export", LEAK, exporter="torchscript"), True, "dynamo=True"
        ),
        Example(
            "an export leak under torch.export", FixTarget("export", LEAK, exporter="dynamo"), True, "dynamo=False"
        ),
        Example(
            "torch's own leak under TorchScript (a toolchain-leak)",
            FixTarget("export", TOOLCHAIN_LEAK, exporter="torchscript"),
            True,
            "dynamo=True",
        ),
        Example("an eager leak is not the exporter's", FixTarget("eager", LEAK), False),
    )


FIXER = ExporterSwitch()
