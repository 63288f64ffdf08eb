"""StrEnum on every Python bisector supports: members are their values as strings.

str(), format() and json.dumps give the value, as with Python 3.11's enum.StrEnum.
"""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # Python 3.10 has no StrEnum: the same behaviour from a str mixin

    class StrEnum(str, Enum):
        __str__ = str.__str__
        __format__ = str.__format__


__all__ = ["StrEnum"]
