"""Infer the inputs of every sample model (no probing: inference only) and compare them with the
inputs its ground truth states.

    python bench/infer_zoo.py [--only list_append,hf_gpt2] [--json]

Prints one row per model: the inferred flags and their source, or the error; whether the inferred
--input values are the ones BISECTOR_TRUTH gives; and the seconds it took. Exit 1 if any model
with plain inputs (no hook) was not inferred, or inferred differently.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bisector.common.errors import UserError  # noqa: E402
from bisector.find.infer_inputs import infer  # noqa: E402
from bisector.model.spec import ModelSpec  # noqa: E402
from bisector.model.zoo import zoo  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="comma-separated sample names (file stems or stem:Spec)")
    ap.add_argument("--json", action="store_true", help="one JSON object per model instead of the table")
    args = ap.parse_args()
    only = {s for s in args.only.split(",") if s}
    failed = 0
    for truth in zoo(ROOT / "sample_models"):
        if only and truth.name not in only and Path(truth.path).stem not in only:
            continue
        started = time.perf_counter()
        row: dict[str, object] = {"model": truth.name, "expected": list(truth.inputs)}
        try:
            found = infer(ModelSpec(path=str(Path(truth.path).resolve()), name=truth.spec))
            row.update(found.to_json(), flags=found.as_flags(), same=list(found.inputs) == list(truth.inputs))
        except UserError as exc:
            row.update(error=str(exc), same=False)
        row["seconds"] = round(time.perf_counter() - started, 1)
        failed += not row["same"]
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            said = f"{row['flags']}  (from {row['source']})" if "flags" in row else f"ERROR {row['error']}"
            mark = "ok " if row["same"] else "DIFF"
            print(f"{mark} {truth.name:<22} {said}  [{row['seconds']} s]", flush=True)
            if not row["same"]:
                print(f"     expected: {' '.join(truth.inputs)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
