r"""A `match` rule's trigger: keywords and a regular expression searched in a description, in bounded
time: patterns are capped and refused when nested repeats could backtrack exponentially, the text
is capped, the search has a deadline (a timeout counts as no match). Keywords are escaped literals.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import regex

log = logging.getLogger(__name__)

MAX_TEXT = 4000  # characters of description searched (a 128-token description is ~600)
MAX_PATTERN = 500  # characters of a regular expression
REGEX_TIMEOUT = 0.05  # seconds one search may take


@dataclass(frozen=True)
class Match:
    any: tuple[str, ...] = ()
    all: tuple[str, ...] = ()
    regex: str | None = None
    _any: tuple[re.Pattern, ...] = field(default=(), repr=False, compare=False)
    _all: tuple[re.Pattern, ...] = field(default=(), repr=False, compare=False)
    _regex: regex.Pattern | None = field(default=None, repr=False, compare=False)

    @classmethod
    def build(cls, any: Sequence[str] = (), all: Sequence[str] = (), pattern: str | None = None) -> Match:
        """Compile the keywords and the regex; ValueError with the reason for a bad regex."""
        return cls(tuple(any), tuple(all), pattern, tuple(map(keyword_pattern, any)),
                   tuple(map(keyword_pattern, all)), None if pattern is None else compile_regex(pattern))

    def matches(self, text: str) -> bool:
        text = text[:MAX_TEXT]
        if self._any and not any(p.search(text) for p in self._any):
            return False
        if not all(p.search(text) for p in self._all):
            return False
        if self._regex is not None:
            try:
                return self._regex.search(text, timeout=REGEX_TIMEOUT) is not None
            except TimeoutError:
                log.warning("regex %r took longer than %.0f ms on a description; counted as no match "
                            "(simplify overlapping alternatives such as (a|aa)+)", self.regex, REGEX_TIMEOUT * 1e3)
                return False
        return True


def keyword_pattern(keyword: str) -> re.Pattern:
    """Whole words, case-insensitive; inner spaces match any whitespace."""
    words = keyword.split()
    if not words:
        raise ValueError("a keyword is empty")
    return re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, words)) + r"(?!\w)", re.IGNORECASE)


def compile_regex(pattern: str) -> regex.Pattern:
    """Python `re` syntax, case-insensitive; ValueError for a bad or dangerous pattern."""
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"regex is {len(pattern)} characters long; at most {MAX_PATTERN} are allowed")
    try:
        re.compile(pattern)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise ValueError(f"bad regex {pattern!r}: {exc.msg}{where}") from None
    if _nested_repeat(_parse(pattern)):
        raise ValueError(f"bad regex {pattern!r}: a quantifier inside a group that is itself repeated by + or *"
                         " can take exponential time; rewrite it without the nesting")
    return regex.compile(pattern, regex.IGNORECASE | regex.VERSION0)


def _parse(pattern: str):
    try:
        from re import _parser  # Python 3.11+
    except ImportError:  # pragma: no cover - Python 3.10
        import sre_parse as _parser
    return _parser.parse(pattern)


_REPEATS = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}
_MAXREPEAT = _parse("a*")[0][1][1]  # the parser's "no upper bound"


def _nested_repeat(items, inside: bool = False) -> bool:
    """Whether a variable-length repeat sits inside an unbounded one."""
    for op, arg in items:
        name = str(op)
        if name in _REPEATS:
            low, high, body = arg
            if (inside and high != low) or _nested_repeat(body, inside or high == _MAXREPEAT):
                return True
        elif name == "SUBPATTERN" and _nested_repeat(arg[-1], inside):
            return True
        elif name == "BRANCH" and any(_nested_repeat(branch, inside) for branch in arg[1]):
            return True
        elif name in ("ASSERT", "ASSERT_NOT") and _nested_repeat(arg[1], inside):
            return True
    return False
