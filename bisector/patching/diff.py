"""A Patch (one file's text before and after) as a git-style unified diff, and several source
edits of one file merged into one patch."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Patch:
    path: str  # absolute
    before: str | None  # None: a new file
    after: str
    summary: str
    root: str = ""

    @property
    def rel(self) -> str:
        try:
            if self.root:
                return str(Path(self.path).resolve().relative_to(Path(self.root).resolve()))
            return Path(self.path).name
        except ValueError:
            return self.path

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def diff(self) -> str:
        """A unified diff that `patch -p1` and `git apply` take from the project root; "" when
        nothing changes."""
        if not self.changed:
            return ""
        before = (self.before or "").splitlines(keepends=True)
        after = self.after.splitlines(keepends=True)
        for lines in (before, after):
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
        old = f"a/{self.rel}" if self.before is not None else "/dev/null"
        # git-style, with the blobs' ids, so `git apply --3way` can fall back on a merge
        head = f"diff --git a/{self.rel} b/{self.rel}\n"
        if self.before is None:
            head += f"new file mode 100644\nindex 0000000..{blob_id(self.after)[:7]}\n"
        else:
            head += f"index {blob_id(self.before)[:7]}..{blob_id(self.after)[:7]} 100644\n"
        return head + "".join(difflib.unified_diff(before, after, old, f"b/{self.rel}"))

    @property
    def before_hash(self) -> str | None:
        return None if self.before is None else digest(self.before)


def blob_id(text: str) -> str:
    """The id git gives this text as a blob."""
    data = text.encode("utf-8")
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def combined_diff(patches: Iterable[Patch]) -> str:
    return "".join(p.diff for p in patches)


def merge_edits(before: str, afters: Sequence[str]) -> tuple[str, list[int]]:
    """Apply several edits made against the same text when their changed lines do not overlap.
    Returns the merged text and the indexes of the edits left out (overlapping an earlier one)."""
    base = before.splitlines(keepends=True)
    taken: list[tuple[int, int, list[str]]] = []  # (start, end, replacement) in base lines
    skipped: list[int] = []
    for k, after in enumerate(afters):
        new_lines = after.splitlines(keepends=True)
        matcher = difflib.SequenceMatcher(a=base, b=new_lines, autojunk=False)
        ops = [op for op in matcher.get_opcodes() if op[0] != "equal"]
        spans = [(i1, i2, new_lines[j1:j2]) for _, i1, i2, j1, j2 in ops]
        if any(not (e <= s0 or s >= e0) or (s == e == s0 == e0) for s, e, _ in spans for s0, e0, _ in taken):
            skipped.append(k)
            continue
        taken.extend(spans)
    out: list[str] = []
    pos = 0
    for s, e, repl in sorted(taken, key=lambda t: (t[0], t[1])):
        out.extend(base[pos:s])
        out.extend(repl)
        pos = max(pos, e)
    out.extend(base[pos:])
    return "".join(out), skipped


def source_patches(edits: Iterable[Any], root: str) -> tuple[list[Patch], list[str]]:
    """One patch per edited file, several edits merged; notes for edits that could not be."""
    by_path: dict[str, list[Any]] = {}
    for e in edits:
        by_path.setdefault(str(Path(e.path).resolve()), []).append(e)
    patches, notes = [], []
    for path, es in by_path.items():
        unique: dict[str, Any] = {}
        for e in es:
            unique.setdefault(e.after, e)  # the same edit proposed for two stages is one edit
        es = list(unique.values())
        before = es[0].before
        merged, skipped = merge_edits(before, [e.after for e in es])
        for k in skipped:
            notes.append(f"{Path(path).name}: '{es[k].summary}' overlaps another edit of the same lines; left out")
        summary = "; ".join(e.summary for i, e in enumerate(es) if i not in skipped)
        patches.append(Patch(path, before, merged, summary, root))
    return patches, notes
