"""The package's one exception.

`MaelensError` subclasses `ValueError` so that callers who already catch `ValueError` for bad
input keep working; the CLI turns it into a one-line message and a non-zero exit.
"""

from __future__ import annotations


class MaelensError(ValueError):
    """Bad input or an unusable file: the message says what was expected, what came, and the fix."""
