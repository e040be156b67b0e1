"""Errors that a user's file can cause, named where nothing heavy is imported.

The app catches these to show a message; it builds its page before torch is loaded, so the
errors of torch-using modules (a bad checkpoint) are defined here and re-exported there.
"""


class CheckpointError(ValueError):
    """A file that is not a usable segdemo checkpoint; the message says why."""
