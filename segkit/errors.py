"""Exceptions segkit raises for the user: bad input, or a run that could not finish (one
clear line each). A leaf module: every other module may import it, and it imports nothing
of segkit's."""


class SegkitError(Exception):
    """Base class: a user-facing error whose message names the file or key and the fix.
    ``exit_status``: what ``run.py`` and ``segkit`` exit with (2: bad input, nothing ran)."""

    exit_status = 2


class ConfigError(SegkitError):
    """A config value that cannot work, named by its full key."""


class RunFailed(SegkitError):
    """The input was valid and the run started, but it could not finish: exit status 1 (as a
    sweep with a failed job), apart from 2 (bad input, fix the command and run again)."""

    exit_status = 1


class DivergedError(RunFailed):
    """Training met a non-finite loss (NaN or inf) and was stopped; the run ends FAILED."""


class TrackingUnavailable(RunFailed):
    """The tracking server stopped answering and still does not at the end of the run: its
    results are safe in the run folder, and ``segkit sync`` (or a resume) finishes it."""

    def __init__(self, uri: str, run_dir: object, run_id: str):
        self.uri, self.run_dir, self.run_id = uri, run_dir, run_id
        super().__init__(
            f"tracking server {uri} unreachable: the run's results are in {run_dir}; finish "
            f"the logging with: segkit sync {run_dir}   (or resume with python run.py "
            f"trainer.resume={run_id})")

    def __reduce__(self):  # pickled by process launchers: rebuilt from its fields
        return type(self), (self.uri, self.run_dir, self.run_id)
