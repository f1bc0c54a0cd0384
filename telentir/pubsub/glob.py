"""Redis glob patterns, translated to Python regular expressions.

Redis matches PSUBSCRIBE patterns with ``stringmatchlen`` (``src/util.c``), which is
not ``fnmatch``: ``[^a]`` negates (fnmatch uses ``[!a]``), ``\\`` escapes inside and
outside brackets, and a few edge cases behave in ways worth knowing (all checked
against a real Redis 7 server by ``tests/events/test_pubsub_conformance.py``):

- a non-empty pattern never matches the empty string, so ``*`` does not match ``""``;
- ``[`` with no closing ``]`` is a class running to the end of the pattern
  (``a[bc`` matches ``ab``), and a lone trailing ``[`` matches nothing;
- ``[]a]`` is an empty class (matching nothing) followed by a literal ``a]``;
- ``x-y`` is a range whenever two more characters follow ``x``, even when ``y`` is
  the closing ``]`` (``[a-]b`` is one class holding ``]``..``a`` and ``b``);
- reversed ranges work (``[z-a]`` equals ``[a-z]``);
- a trailing unpaired ``\\`` is a literal backslash.

Redis compares bytes, not characters: its ``?`` matches one byte of UTF-8. Callers that
need byte-exact matching (the memory broker) translate both the pattern and the channel
with ``.decode("latin-1")`` so one character here is one byte there. Range endpoints
are compared as unsigned bytes; Redis built for x86 compares *signed* chars, so a range
with a non-ASCII endpoint differs (``[\\x00-\\xff]`` matches only ``\\x00`` and ``\\xff``
on such a server). Nobody should write such a range; we do not imitate it.
"""

import functools
import re

# Characters that carry meaning in a Redis glob; escaping them makes a value literal.
_GLOB_SPECIAL = frozenset("*?[]\\")


@functools.lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile a Redis glob into an anchored, case-sensitive regular expression."""
    body = _translate(pattern)
    # Redis's matcher never enters its loop for an empty string, so only the empty
    # pattern matches it; the lookahead encodes that for every other pattern.
    guard = "(?=.)" if pattern else ""
    return re.compile(rf"\A{guard}{body}\Z", re.DOTALL)


def escape_glob(value: str) -> str:
    """Backslash-escape glob metacharacters so that ``value`` matches only itself."""
    return "".join("\\" + char if char in _GLOB_SPECIAL else char for char in value)


def _translate(pattern: str) -> str:
    """Translate a whole glob to a regex body, walking it as stringmatchlen does."""
    parts: list[str] = []
    i, end = 0, len(pattern)
    while i < end:
        char = pattern[i]
        if char == "*":
            while i + 1 < end and pattern[i + 1] == "*":
                i += 1  # Redis collapses runs of stars; so do we, to keep regexes small.
            parts.append(".*")
            i += 1
        elif char == "?":
            parts.append(".")
            i += 1
        elif char == "[":
            part, i = _translate_class(pattern, i + 1)
            parts.append(part)
        elif char == "\\" and i + 1 < end:
            parts.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            parts.append(re.escape(char))
            i += 1
    return "".join(parts)


def _translate_class(pattern: str, i: int) -> tuple[str, int]:
    """Translate a bracket class starting after ``[``; return it and the next index."""
    end = len(pattern)
    negate = i < end and pattern[i] == "^"
    i += negate
    members: list[str] = []
    while i < end and pattern[i] != "]":
        if pattern[i] == "\\" and i + 1 < end:
            members.append(re.escape(pattern[i + 1]))
            i += 2
        elif i + 2 < end and pattern[i + 1] == "-":
            # Same test as Redis ("at least 3 pattern bytes left"), which is why the
            # closing "]" can end up as a range endpoint.
            low, high = sorted((pattern[i], pattern[i + 2]))
            members.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 3
        else:
            members.append(re.escape(pattern[i]))
            i += 1
    # Step over the "]" -- or past the end, where Redis lets an unclosed class stop.
    return _class_regex(members, negate), i + 1


def _class_regex(members: list[str], negate: bool) -> str:
    """Render class members; an empty class matches nothing, negated it matches anything."""
    if not members:
        return "." if negate else "(?!)"
    return f"[{'^' if negate else ''}{''.join(members)}]"
