"""What several commands print the same way.
"""

from __future__ import annotations

import sys


def report(problems: list[str]) -> bool:
    """Print each problem on its own line to stderr; True when there were any."""
    for line in problems:
        print(line, file=sys.stderr)
    return bool(problems)
