"""A Patch (one file's text before and after) as a git-style unified diff, and several source
edits of one file merged into one patch. The diff and the written bytes come from the file's
bytes (bisector.common.source_text), so CRLF endings, a BOM and a PEP 263 encoding survive."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from bisector.common.source_text import SourceError, SourceText


@dataclass(frozen=True)
class Patch:
    """One file's text before and after, as fixers and libcst see it (see bisector.common.source_text);
    its diff and the bytes --apply writes keep the file's own line endings, BOM and encoding."""

    path: str  # absolute
    before: str | None  # None: a new file
    after: str
    summary: str
    root: str = ""
    # The file `before` was read from. None: `before` stands for UTF-8 bytes with "\n" endings.
    source: SourceText | None = None

    def __post_init__(self) -> None:
        if self.source is not None and self.source.text != self.before:
            raise ValueError(f"{self.path}: the file given is not the text before the edit")

    @classmethod
    def of_file(cls, path: str, before: str | None, after: str, summary: str, root: str = "") -> Patch:
        """A patch of the file at path, which `before` was read from: its bytes come along when
        it still reads as `before`. When it does not (changed since), the patch stands for the
        text alone, and --apply refuses it as changed."""
        source = None
        if before is not None:
            try:
                source = SourceText.read(path)
            except (OSError, SourceError):
                pass
            if source is not None and source.text != before:
                source = None
        return cls(path, before, after, summary, root, source)

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

    @cached_property
    def _original(self) -> SourceText:
        if self.source is not None:
            return self.source
        return SourceText((self.before or "").encode("utf-8"), "utf-8")

    @property
    def before_bytes(self) -> bytes | None:
        return None if self.before is None else self._original.data

    @cached_property
    def after_bytes(self) -> bytes:
        """What --apply writes: the file's bytes with the edited lines changed."""
        return self._original.encode(self.after)

    @property
    def diff(self) -> str:
        """The unified diff as text (for JSON and reports); diff_bytes is what applies."""
        head, body, _ = self._diff_parts()
        return head + body

    @property
    def diff_bytes(self) -> bytes:
        """A unified diff that `patch -p1` and `git apply` take from the project root, in the
        file's own bytes (CRLF lines keep their "\r", a BOM stays in the first line); b"" when
        nothing changes."""
        head, body, codec = self._diff_parts()
        return head.encode("utf-8", "surrogateescape") + body.encode(codec)

    def _diff_parts(self) -> tuple[str, str, str]:
        if not self.changed:
            return "", "", "utf-8"
        codec = self._original.codec
        before = _git_lines(self.before_bytes.decode(codec)) if self.before_bytes is not None else []
        after = _git_lines(self.after_bytes.decode(codec))
        old = f"a/{self.rel}" if self.before is not None else "/dev/null"
        # git-style, with the blobs' ids, so `git apply --3way` can fall back on a merge
        head = f"diff --git a/{self.rel} b/{self.rel}\n"
        if self.before_bytes is None:
            head += f"new file mode 100644\nindex 0000000..{blob_id(self.after_bytes)[:7]}\n"
        else:
            head += f"index {blob_id(self.before_bytes)[:7]}..{blob_id(self.after_bytes)[:7]} 100644\n"
        lines = list(difflib.unified_diff(before, after, old, f"b/{self.rel}"))
        # the ---/+++ lines name files: they go with the head, not in the file's encoding
        return head + "".join(lines[:2]), "".join(lines[2:]), codec

    @property
    def before_hash(self) -> str | None:
        return None if self.before_bytes is None else digest(self.before_bytes)


# A last line without an ending carries the marker diff and patch use for it, so it differs from
# the same line with one and the marker follows it wherever the diff prints it.
NO_EOL = "\n\\ No newline at end of file\n"


def _git_lines(text: str) -> list[str]:
    """text's lines as git and patch count them: each ends at "\n" ("\r" stays in the line)."""
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1] + NO_EOL)
    return out


def blob_id(data: bytes) -> str:
    """The id git gives these bytes as a blob."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def combined_diff(patches: Iterable[Patch]) -> str:
    return "".join(p.diff for p in patches)


def combined_diff_bytes(patches: Iterable[Patch]) -> bytes:
    """The diffs as they apply: each file's lines in its own bytes."""
    return b"".join(p.diff_bytes for p in patches)


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
        patches.append(Patch.of_file(path, before, merged, summary, root))
    return patches, notes
