"""User-facing errors.

Anything the user can fix (a missing file, a bad spec, a dynamic shape without a
given shape) raises :class:`MemflatError`. The CLI prints its message as one line
and exits with status 2; library users can catch it like any ``ValueError``.
"""


class MemflatError(ValueError):
    """A problem with the user's input, reported as one clear line."""


class ScheduleViolation(RuntimeError):
    """A schedule that does not fit a memory it was planned for: a bug, not bad input.

    The simulator raises it naming the first violation; the CLI exits with status 1.
    """
