r"""The MIME parser extraction uses: the standard library's, with two costs taken out.

`email.feedparser` compiles a regular expression for every multipart boundary it meets
(`re.compile('(?P<sep>' + re.escape(separator) + ...)`). A boundary is unique to its
message, so each multipart compiles a new one (the `re` cache never hits): measured on
benchmarks/inbound.py's message (20 KB with a PDF), extraction took a median 1.97 ms with
it and 1.80 ms without (alternating rounds; single runs ranged from 0.2 to 0.4 ms saved).

So extraction parses with a private copy of `email.feedparser` (loaded from the standard
library's own source; the module everyone else imports is left alone) whose `re.compile`
answers that one pattern with `_BoundaryPattern`, which matches what the compiled pattern
matches: the separator at the start of the line, then the pattern's tail, compiled once.
Any other pattern is compiled as before. tests/test_mime_parser.py holds the trees the
two parsers build equal on the test corpus, malformed messages and fuzzed ones.

The other cost: to drop the line end a part's body ends with, feedparser searches the whole
body for `(\r\n|\r|\n)\Z`, a scan of every character (125 µs for a 20 KB part, 6 ms for a
megabyte). `_EndOfLine` starts that same search two characters before the end, where any
match has to start; the match found is the same.
"""

from __future__ import annotations

import importlib.util
import re
from email.message import Message
from email.policy import Policy
from types import ModuleType
from typing import Any

# The pattern email.feedparser builds around re.escape(separator) (Python 3.11); should it
# change, every pattern is compiled as before and the test comparing the parsers says so.
_PREFIX = "(?P<sep>"
_SUFFIX = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
_TAIL = re.compile(_SUFFIX[1:])
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)  # re.escape puts one backslash before a char
_CHUNK = 8192  # what email.parser.Parser feeds at a time


class _BoundaryPattern:
    __slots__ = ("_separator",)

    def __init__(self, separator: str) -> None:
        self._separator = separator

    def match(self, line: str) -> re.Match[str] | None:
        # feedparser reads whether a line matched and the groups `end` and `linesep`, which
        # the tail's match holds (its span starts after the separator).
        if not line.startswith(self._separator):
            return None
        return _TAIL.match(line, len(self._separator))


class _EndOfLine:
    r"""feedparser's NLCRE_eol (`(\r\n|\r|\n)\Z`), searched only where it can match."""

    __slots__ = ("_pattern",)

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self._pattern = pattern

    def search(self, text: str) -> re.Match[str] | None:
        return self._pattern.search(text, max(0, len(text) - 2))


class _Patterns:
    """`re` as the private feedparser sees it: all of it, with `compile` as above."""

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)

    @staticmethod
    def compile(pattern: Any, flags: int = 0) -> Any:
        if (
            isinstance(pattern, str)
            and not flags
            and pattern.startswith(_PREFIX)
            and pattern.endswith(_SUFFIX)
        ):
            escaped = pattern[len(_PREFIX) : -len(_SUFFIX)]
            separator = _ESCAPED.sub(r"\1", escaped)
            if re.escape(separator) == escaped:  # else not what feedparser builds
                return _BoundaryPattern(separator)
        return re.compile(pattern, flags)


def _private_feedparser() -> ModuleType:
    spec = importlib.util.find_spec("email.feedparser")
    if spec is None or spec.loader is None:  # (the standard library is always there)
        raise ImportError("email.feedparser not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.re = _Patterns()  # type: ignore[attr-defined]
    end_of_line = module.NLCRE_eol
    if end_of_line.pattern == r"(\r\n|\r|\n)\Z":  # else left as it is; the tests say so
        module.NLCRE_eol = _EndOfLine(end_of_line)  # type: ignore[attr-defined]
    return module


_feedparser = _private_feedparser()


def parse_message(data: bytes, policy: Policy) -> Message:
    """What `BytesParser(policy=policy).parsebytes(data)` returns, built the same way."""
    text = data.decode("ascii", "surrogateescape")
    parser = _feedparser.FeedParser(policy=policy)
    for start in range(0, len(text), _CHUNK):
        parser.feed(text[start : start + _CHUNK])
    message: Message = parser.close()
    return message
