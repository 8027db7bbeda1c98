"""Small helpers shared by the cluster operations."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pvc.core.errors import InvalidInput

LIMIT_MAX = 256
_LIMIT_SYNTAX = ("text, '.', '[...]', '\\d', '\\w', '\\s', '*', '+', '?', a leading '^' and a trailing '$'; "
                 "'*' and '?' with nothing before them are glob wildcards")
_DIGITS = frozenset("0123456789")
_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_SPACE = frozenset(" \t\n\r\f\v")
_CLASS_ESCAPES = {"d": (_DIGITS, False), "D": (_DIGITS, True), "w": (_WORD, False), "W": (_WORD, True),
                  "s": (_SPACE, False), "S": (_SPACE, True)}

# An atom matches one character: (characters, ranges, negated); "any character" is (empty, (), True).
_Atom = tuple[frozenset[str], tuple[tuple[str, str], ...], bool]
_ANY: _Atom = (frozenset(), (), True)


def _atom_matches(atom: _Atom, char: str) -> bool:
    chars, ranges, negated = atom
    return (char in chars or any(low <= char <= high for low, high in ranges)) != negated


class LimitMatcher:
    """A list filter as upstream's lists take it (a regex, fuzzy unless anchored with ^ or $), in the
    subset of regex syntax a linear-time matcher can run: one-character atoms (literals, '.', classes,
    escapes) each followed by at most one of ?, * or +; no groups, alternation or counted repeats.

    User input never reaches the backtracking `re` engine (D14: one crafted limit froze pvcapid): a
    match takes len(text) steps of a few integer operations on one bit per atom (a bit-parallel
    NFA). A '*' or '?' with nothing before it (where a regex would be an error) is a glob wildcard:
    '*web1', '^?eb1$'.
    """

    def __init__(self, limit: str) -> None:
        if len(limit) > LIMIT_MAX:
            raise InvalidInput(f"limit: {len(limit)} characters is longer than a limit may be "
                               f"(at most {LIMIT_MAX})")
        self.text = limit
        body = limit
        start_anchored = body.startswith("^")
        if start_anchored:
            body = body[1:]
        end_anchored = body.endswith("$") and (len(body) - 1 - len(body[:-1].rstrip("\\"))) % 2 == 0
        if end_anchored:
            body = body[:-1]
        parsed = self._parse(body, 1 + start_anchored)
        self.literal: str | None = None
        if all(not repeat and not optional and len(atom[0]) == 1 and not atom[1] and not atom[2]
               for atom, repeat, optional in parsed):
            self.literal = "".join(next(iter(atom[0])) for atom, _, _ in parsed)
        self.start_anchored, self.end_anchored = start_anchored, end_anchored
        # The NFA, bit-parallel (Shift-And): bit i set = "about to match atom i"; bit len(atoms) accepts.
        wrap = (_ANY, True, True)
        atoms = ([] if start_anchored else [wrap]) + parsed + ([] if end_anchored else [wrap])
        self.atoms = [atom for atom, _, _ in atoms]
        self.repeating = sum(1 << i for i, (_, repeat, _) in enumerate(atoms) if repeat)
        self.optional = sum(1 << i for i, (_, _, optional) in enumerate(atoms) if optional)
        self.accept = 1 << len(atoms)
        self.start = self._closure(1)
        self.masks: dict[str, int] = {}     # character -> the atoms it matches

    def _refuse(self, why: str) -> InvalidInput:
        return InvalidInput(f"limit: '{self.text}' is not a valid regular expression here: {why} (a limit "
                            f"takes {_LIMIT_SYNTAX})")

    def _parse(self, body: str, offset: int) -> list[tuple[_Atom, bool, bool]]:
        """The atoms of body as (atom, may repeat, may be skipped); offset: body's column in the limit."""
        atoms: list[tuple[_Atom, bool, bool]] = []
        quantified = False
        position = 0
        while position < len(body):
            char = body[position]
            column = position + offset
            position += 1
            if char in "*?+":
                if not atoms:
                    if char == "+":
                        raise self._refuse(f"'+' at column {column} has nothing to repeat")
                    atoms.append((_ANY, char == "*", char == "*"))  # a glob wildcard
                    quantified = True
                    continue
                if quantified:
                    raise self._refuse(f"'{char}' at column {column} repeats a repeat")
                atom, _, _ = atoms[-1]
                if char == "+":
                    atoms.append((atom, True, True))
                else:
                    atoms[-1] = (atom, char == "*", True)
                quantified = True
                if body[position:position + 1] == "?":  # lazy: the same strings match
                    position += 1
                continue
            quantified = False
            if char in "()|{}":
                what = {"(": "groups", ")": "groups", "|": "alternation"}.get(char, "counted repeats")
                raise self._refuse(f"{what} ('{char}' at column {column}) are not supported; "
                                   f"write '\\{char}' for the character")
            if char in "^$":
                raise self._refuse(f"the anchor '{char}' at column {column} is only allowed at the "
                                   f"{'start' if char == '^' else 'end'}; write '\\{char}' for the character")
            if char == ".":
                atoms.append((_ANY, False, False))
            elif char == "[":
                atom, position = self._parse_class(body, position, offset)
                atoms.append((atom, False, False))
            elif char == "\\":
                if position >= len(body):
                    raise self._refuse("a trailing '\\' escapes nothing")
                escaped = body[position]
                position += 1
                if escaped in _CLASS_ESCAPES:
                    chars, negated = _CLASS_ESCAPES[escaped]
                    atoms.append(((chars, (), negated), False, False))
                elif escaped.isalnum():
                    raise self._refuse(f"'\\{escaped}' at column {column} is not supported")
                else:
                    atoms.append(((frozenset(escaped), (), False), False, False))
            else:
                atoms.append(((frozenset(char), (), False), False, False))
        return atoms

    def _parse_class(self, body: str, position: int, offset: int) -> tuple[_Atom, int]:
        """The class opened at position - 1 ('[...]', '[^...]', ranges, escapes) and where it ends."""
        column = position - 1 + offset
        unclosed = self._refuse(f"the class '[' at column {column} is not closed")
        negated = body[position:position + 1] == "^"
        position += int(negated)
        chars: set[str] = set()
        ranges: list[tuple[str, str]] = []
        first = True
        while True:
            if position >= len(body):
                raise unclosed
            char = body[position]
            position += 1
            if char == "]" and not first:
                return (frozenset(chars), tuple(ranges), negated), position
            first = False
            if char == "\\":
                if position >= len(body):
                    raise unclosed
                char = body[position]
                position += 1
                if char in _CLASS_ESCAPES and not _CLASS_ESCAPES[char][1]:
                    chars |= _CLASS_ESCAPES[char][0]
                    continue
                if char.isalnum():
                    raise self._refuse(f"'\\{char}' in the class at column {column} is not supported")
            if body[position:position + 1] == "-" and position + 1 < len(body) and body[position + 1] != "]":
                high = body[position + 1]
                position += 2
                if high == "\\":
                    if position >= len(body):
                        raise unclosed
                    high = body[position]
                    position += 1
                if high < char:
                    raise self._refuse(f"the range '{char}-{high}' in the class at column {column} "
                                       "is reversed")
                ranges.append((char, high))
            else:
                chars.add(char)

    def _closure(self, states: int) -> int:
        """states plus those reached by skipping optional atoms. Within a run of optional atoms,
        adding the active ones to the run carries from the lowest active bit to one past the run:
        (optional + active) ^ optional sets exactly the bits that skipping reaches."""
        return states | ((self.optional + (states & self.optional)) ^ self.optional)

    def _mask(self, char: str) -> int:
        mask = self.masks.get(char)
        if mask is None:
            mask = sum(1 << i for i, atom in enumerate(self.atoms) if _atom_matches(atom, char))
            if len(self.masks) >= 4096:
                self.masks.clear()
            self.masks[char] = mask
        return mask

    def fullmatch(self, text: str) -> bool:
        """Whether text matches the limit (the whole text, as upstream's re.fullmatch)."""
        if self.literal is not None:
            if self.start_anchored:
                return text == self.literal if self.end_anchored else text.startswith(self.literal)
            return text.endswith(self.literal) if self.end_anchored else self.literal in text
        states, repeating, optional = self.start, self.repeating, self.optional
        for char in text:
            matched = states & self._mask(char)
            # a repeating atom stays where it is, any other moves on; then skip optional atoms
            states = (matched & repeating) | ((matched & ~repeating) << 1)
            states |= (optional + (states & optional)) ^ optional
            if not states:
                return False
        return bool(states & self.accept)


def limit_matcher(limit: str | None) -> LimitMatcher | None:
    """PVC list filters: regexes matched fuzzily unless anchored with ^ or $ (see LimitMatcher)."""
    return LimitMatcher(limit) if limit else None


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll predicate until it holds (True) or timeout passes (False): the one synchronous wait of
    the cluster layer (the API waits asynchronously, pvc.api.common.wait_async)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def timestamp(epoch: float | None = None) -> str:
    """Fault/task timestamps as PVC shows them: 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC)."""
    moment = datetime.fromtimestamp(epoch, UTC) if epoch is not None else datetime.now(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_name(value: str, field: str = "name") -> str:
    if not NAME_RE.match(value or ""):
        raise InvalidInput(
            f"{field}: '{value}' is not a valid name (letters, digits, '.', '_', '-'; at most 63)"
        )
    return value


def optional_text(value: Any) -> str | None:
    """None for unset values: missing, "" or blank (upstream clients send empty options)."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def digits(text: str, field: str, what: str, most: int = 9) -> int:
    """A whole number written as 1 to `most` plain digits (no sign); refused as "not <what>"."""
    if not re.fullmatch(rf"[0-9]{{1,{most}}}", text):
        raise InvalidInput(f"{field}: '{text[:40]}' is not {what}")
    return int(text)


def csv_items(values: Any) -> list[str]:
    """The items of a list input: repeated keys and/or comma-separated text, blanks dropped."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]
