"""Fixture plumbing shared by conftest.py and test modules."""

from __future__ import annotations

import pytest


def start_early(request: pytest.FixtureRequest, *names: str) -> None:
    """Set up each fixture of ``names`` now if a test selected in this session uses it
    (directly or through other fixtures). For fixtures that start background work (a
    training process, a server), so that it runs alongside the tests before its first use;
    a deselected test starts nothing."""
    used = {n for item in request.session.items for n in getattr(item, "fixturenames", ())}
    for name in names:
        if name in used:
            request.getfixturevalue(name)
