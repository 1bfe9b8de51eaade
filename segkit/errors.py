"""Exceptions segkit raises for bad input (one clear line each). A leaf module: every other
module may import it, and it imports nothing of segkit's."""


class SegkitError(Exception):
    """Base class: a user-facing error whose message names the file or key and the fix."""


class ConfigError(SegkitError):
    """A config value that cannot work, named by its full key."""
