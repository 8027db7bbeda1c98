"""The list filter `limit`: upstream's fuzzy regex, run by a linear-time matcher (D14).

The differential test holds the matcher to Python's `re` (the engine upstream uses) on the syntax
both accept; the pathological limits are ones that take a backtracking engine minutes or forever:
here they must simply finish and answer correctly.
"""

from __future__ import annotations

import random
import re

import pytest

from pvc.cluster.common import LIMIT_MAX, limit_matcher
from pvc.core.errors import InvalidInput


def matches(limit: str, text: str) -> bool:
    matcher = limit_matcher(limit)
    assert matcher is not None
    return matcher.fullmatch(text)


def upstream(limit: str) -> re.Pattern[str]:
    """Upstream's translation: '.*' added unless anchored, then re.fullmatch."""
    pattern = ".*" + limit if not limit.startswith("^") else limit[1:]
    pattern = pattern + ".*" if not pattern.endswith("$") else pattern[:-1]
    return re.compile(pattern, re.S)


@pytest.mark.parametrize(("limit", "text", "expected"), [
    ("web", "xweb1", True), ("web", "wbe", False), ("^web", "web1", True), ("^web", "xweb", False),
    ("eb1$", "web1", True), ("eb1$", "web10", False), ("^web1$", "web1", True), ("^web1$", "web10", False),
    ("^d.s", "disk0", True), ("[45]", "hv4", True), ("[45]", "hv3", False), ("^hv[0-9]+$", "hv12", True),
    ("^hv[0-9]+$", "hv", False), ("^hv\\d?$", "hv", True), ("web.*db", "web-to-db", True),
    ("[^0-9]$", "hv1", False), ("a\\.b", "a.b", True), ("a\\.b", "axb", False), ("Web", "web", False),
    ("\\$", "a$b", True), ("-in$", "ssh-in", True), ("[]x]", "a]", True), ("[a-]", "-", True),
])
def test_upstream_syntax(limit: str, text: str, expected: bool) -> None:
    assert matches(limit, text) is expected


@pytest.mark.parametrize(("limit", "text", "expected"), [
    ("*web", "myweb1", True), ("^*web1$", "myweb1", True), ("^?eb1$", "web1", True), ("^?eb1$", "eb1", False),
    ("^*$", "", True), ("*", "anything", True),
])
def test_leading_glob_wildcards(limit: str, text: str, expected: bool) -> None:
    """Where a regex has nothing to repeat (an error upstream), '*' and '?' are glob wildcards."""
    assert matches(limit, text) is expected


def test_no_limit_is_no_filter() -> None:
    assert limit_matcher(None) is None and limit_matcher("") is None


@pytest.mark.parametrize(("limit", "named"), [
    ("(", "groups"), ("(a+)+$", "groups"), ("a|b", "alternation"), ("a{2,}", "counted repeats"),
    ("[ab", "not closed"), ("a^b", "anchor '^'"), ("a$b", "anchor '$'"), ("+a", "nothing to repeat"),
    ("a**", "repeats a repeat"), ("\\1", "'\\1'"), ("[z-a]", "reversed"), ("a\\", "escapes nothing"),
])
def test_unsupported_syntax_is_refused_by_name(limit: str, named: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        limit_matcher(limit)
    assert str(refused.value).startswith(f"limit: '{limit}' is not a valid regular expression")
    assert named in str(refused.value)


def test_over_long_limit_is_refused_naming_the_cap() -> None:
    assert limit_matcher("a" * LIMIT_MAX) is not None
    with pytest.raises(InvalidInput, match=f"limit: 10000 characters .*at most {LIMIT_MAX}"):
        limit_matcher("a" * 10_000)


LONG = "a" * 10_000


@pytest.mark.parametrize(("limit", "text", "expected"), [
    ("a*" * 100 + "b", LONG, False), ("a*" * 100 + "b", LONG + "b", True),
    (".*" * 120 + "b", LONG, False), ("^" + "a?" * 60 + "a" * 60 + "$", "a" * 120, True),
    ("^" + "a?" * 60 + "a" * 60 + "$", "a" * 121, False),
    ("^a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*c$", LONG, False),
    ("[a-z]*[a-z]*[a-z]*[a-z]*[a-z]*!", LONG + "!", True), ("\\(a+\\)+$", "(" + LONG + ")", True),
    ("^a+a+a+a+a+a+a+a+$", LONG + "!", False), ("^[^!]*[^!]*[^!]*$", LONG, True),
    ("web", LONG, False), ("^" + "a" * 255, LONG, True), ("^" + "a" * 255, "a" * 254, False),
    ("a" * 255 + "$", LONG, True),
])
def test_pathological_limits_terminate_with_the_right_answer(limit: str, text: str, expected: bool) -> None:
    """Limits that take a backtracking engine exponential or high-polynomial time on 10,000 characters
    (no timing assertion: the point is that these finish)."""
    assert matches(limit, text) is expected


def test_many_names_share_one_matcher() -> None:
    """A 10,000-VM list runs one matcher over every name (the memoised steps are bounded)."""
    matcher = limit_matcher("^vm[0-9]*7$")
    assert matcher is not None
    names = [f"vm{n}" for n in range(10_000)]
    assert [n for n in names if matcher.fullmatch(n)] == [n for n in names if n.endswith("7")]


def test_agrees_with_re_on_the_shared_syntax() -> None:
    """Random limits in the syntax both accept answer as upstream's re.fullmatch does."""
    pieces = ["a", "b", "1", ".", "[ab]", "[^a]", "[0-9]", "\\d", "\\w", "\\S", "\\.", "*", "+", "?", "-",
              "[a-c]", "[]a]", "*?", "+?", "??", "[-a]", "[\\d.]"]
    chooser = random.Random(13)
    compared = 0
    for _ in range(3_000):
        limit = "".join(chooser.choice(pieces) for _ in range(chooser.randint(1, 7)))
        limit = ("^" if chooser.random() < 0.3 else "") + limit + ("$" if chooser.random() < 0.3 else "")
        if limit.lstrip("^")[:1] in "*?+":
            continue  # glob wildcards here, errors (or a lazy '.*?') upstream
        try:
            reference = upstream(limit)
            matcher = limit_matcher(limit)
        except (re.error, InvalidInput):
            continue
        assert matcher is not None
        for _ in range(8):
            text = "".join(chooser.choice("ab1.-") for _ in range(chooser.randint(0, 9)))
            assert matcher.fullmatch(text) is (reference.fullmatch(text) is not None), (limit, text)
            compared += 1
    assert compared > 5_000


def test_exponential_dfa_limit_over_many_long_names() -> None:
    """A limit whose DFA has 2^51 states (the 51st character from the end is an 'a') over 2,000
    random 255-character names: each name is one linear pass, whatever the pattern."""
    chooser = random.Random(7)
    names = ["".join(chooser.choice("ab") for _ in range(255)) for _ in range(2_000)]
    matcher = limit_matcher("[ab]*a" + "[ab]" * 50 + "$")
    assert matcher is not None
    assert [n for n in names if matcher.fullmatch(n)] == [n for n in names if n[-51] == "a"]
