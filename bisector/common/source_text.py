"""A user's source file as bytes and as the text bisector edits, and an edited text back to bytes.

Fixers, libcst and ast all work on the text Python itself reads: decoded with the file's BOM or
PEP 263 coding line, without the BOM, every line ending as "\\n". Writing that text back would
turn a Windows-edited file's CRLF endings into LF and drop its BOM. So the text goes back through
the file it came from (SourceText.encode): every line an edit leaves alone keeps its bytes, its
own ending included, and lines an edit adds or changes take the file's dominant ending.

The one place file bytes become text and back: the patch layer (bisector.patching.diff, apply),
the fix engine's shadow copies and the project check all read and write through here. Stdlib only."""

from __future__ import annotations

import codecs
import difflib
import io
import re
import tokenize
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

# A logical line as Python's universal newlines see it: "\r\n", a lone "\r" or "\n" ends one.
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


class SourceError(ValueError):
    """A file bisector cannot decode as Python would (a bad coding line, bytes its codec rejects)."""


@dataclass(frozen=True)
class SourceText:
    data: bytes  # the file, exactly as read
    encoding: str  # the codec Python reads it with ("utf-8-sig" when it starts with a BOM)

    @classmethod
    def of(cls, data: bytes) -> SourceText:
        """Raises SourceError when Python could not read these bytes as source either."""
        try:
            encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        except SyntaxError as exc:
            raise SourceError(exc.msg) from None
        # Only ASCII-compatible codecs keep "\n" and the diff's headers as they are; Python
        # itself accepts no other for source files.
        if codecs.lookup(encoding).name not in ("utf-8", "utf-8-sig") and "\n\r".encode(encoding) != b"\n\r":
            raise SourceError(f"its encoding {encoding} is not ASCII-compatible")
        try:
            data.decode(encoding)
        except UnicodeDecodeError as exc:
            raise SourceError(f"not valid {encoding} at byte {exc.start}") from None
        return cls(data, encoding)

    @classmethod
    def read(cls, path: str | Path) -> SourceText:
        return cls.of(Path(path).read_bytes())

    @property
    def bom(self) -> bytes:
        return codecs.BOM_UTF8 if self.encoding == "utf-8-sig" else b""

    @property
    def codec(self) -> str:
        """The codec of the file's bytes after its BOM (what the diff's lines are encoded in)."""
        return "utf-8" if self.encoding == "utf-8-sig" else self.encoding

    @cached_property
    def _lines(self) -> list[str]:
        """The decoded lines, BOM left out, each with its own ending ("" for a last line without one)."""
        return _LINE.findall(self.data[len(self.bom) :].decode(self.codec))

    @cached_property
    def text(self) -> str:
        """What Python reads: decoded, no BOM, every line ending "\\n"."""
        return "".join(_lf(line) for line in self._lines)

    @cached_property
    def newline(self) -> str:
        """The file's most frequent line ending (the first seen of equally frequent ones); "\\n"
        for a file of one line without an ending."""
        endings = Counter(line[len(line.rstrip("\r\n")) :] for line in self._lines)
        endings.pop("", None)
        return max(endings, key=lambda e: endings[e]) if endings else "\n"  # max keeps the first of a tie

    def encode(self, text: str) -> bytes:
        """text (this file's `text`, edited) as this file's bytes: lines an edit left alone with
        their original bytes, changed and added lines ending with the file's dominant ending,
        the BOM and the encoding kept."""
        before = [_lf(line) for line in self._lines]
        # Split as the file's own lines are: str.splitlines would also split at "\f" or "\x85".
        after = _LINE.findall(text)
        out: list[str] = []
        matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                out.extend(self._lines[i1:i2])
            else:
                out.extend(_with_ending(line, self.newline) for line in after[j1:j2])
        try:
            return self.bom + "".join(out).encode(self.codec)
        except UnicodeEncodeError as exc:
            bad = exc.object[exc.start : exc.end]
            raise SourceError(f"the edit has {bad!r}, which {self.encoding} cannot hold") from None


def _lf(line: str) -> str:
    body = line.rstrip("\r\n")
    return body + "\n" if len(body) < len(line) else body


def _with_ending(line: str, newline: str) -> str:
    body = line.rstrip("\r\n")
    return body + newline if len(body) < len(line) else body


def read_source(path: str | Path) -> str:
    """The text Python reads from path (see SourceText.text). Raises OSError, SourceError."""
    return SourceText.read(path).text


def encode_edit(path: str | Path, before: str, after: str) -> bytes:
    """after, an edit of the text `before` read from path, as the bytes to write there: through
    the file's bytes when it still reads as `before`, else plain UTF-8 with "\\n" endings."""
    try:
        source = SourceText.read(path)
    except (OSError, SourceError):
        return after.encode("utf-8")
    return source.encode(after) if source.text == before else after.encode("utf-8")
