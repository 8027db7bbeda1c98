"""Showing and following log tails the API serves as {name, data} (node logs, VM consoles).

The API returns the latest N lines, not an offset, so following re-fetches the tail and finds
where the lines already shown end in it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pvc.cli.state import CLIState

FOLLOW_INTERVAL = 1.0
FOLLOW_FETCH_LINES = 200
FOLLOW_ANCHOR = 10


def log_lines(data: Any) -> list[str]:
    text = data.get("data", "") if isinstance(data, dict) else ""
    if isinstance(text, list):
        return [str(line) for line in text]
    return str(text or "").splitlines()


def new_log_lines(previous: Sequence[str], fetched: Sequence[str], anchor: int = FOLLOW_ANCHOR) -> list[str]:
    """The lines of `fetched` (the log's latest tail) not yet shown, given what was shown before.

    The last few shown lines are located in the new tail; everything after them is new. If they
    are not found (the log moved on by more than a whole fetch), the whole tail is new.
    """
    if not previous:
        return list(fetched)
    tail = list(previous[-anchor:])
    size = len(tail)
    for start in range(len(fetched) - size, -1, -1):
        if list(fetched[start:start + size]) == tail:
            return list(fetched[start + size:])
    # fewer shown lines than the anchor may be a prefix of a longer match; try shorter anchors
    for shorter in range(size - 1, 0, -1):
        if list(fetched[:shorter]) == tail[-shorter:]:
            return list(fetched[shorter:])
    return list(fetched)


def show_log(state: CLIState, path: str, count: int, follow: bool) -> None:
    """Print the last `count` lines of the log at `path`; with follow, keep printing new ones."""
    api = state.api()
    fetched = log_lines(api.get_json(path, params={"lines": max(count, FOLLOW_FETCH_LINES) if follow
                                                   else count}))
    if not follow:
        if fetched and count:
            state.out("\n".join(fetched[-count:]))
        return
    for line in fetched[-count:] if count else []:
        state.out(line)
    shown = fetched
    try:
        while True:
            time.sleep(FOLLOW_INTERVAL)
            fetched = log_lines(api.get_json(path, params={"lines": FOLLOW_FETCH_LINES}))
            for line in new_log_lines(shown, fetched):
                state.out(line)
            if fetched:
                shown = fetched
    except KeyboardInterrupt:
        return
