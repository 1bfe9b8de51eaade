"""Exceptions segkit raises for bad input (one clear line each)."""


class SegkitError(Exception):
    """Base class: a user-facing error whose message names the file or key and the fix."""
