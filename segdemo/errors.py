"""The errors a user should read: one base class, so the app shows each as a message.

Everything a visitor, a CLI user or an API client can get wrong (a file, a name, a setting, a
busy trainer) raises a :class:`UserError` whose message says what is wrong and how to fix it. The
app turns exactly this class into a message on the page and over the API; anything else is a bug,
logged in full and reported briefly. They subclass ``ValueError`` because every one of them is a
bad value handed in from outside.

Nothing here imports anything: the app maps these before torch is loaded.
"""


class UserError(ValueError):
    """Bad input from outside segdemo; the message is written for the person who gave it."""


class ImageError(UserError):
    """An image or mask that segdemo refuses to read (empty, undecodable, too large, wrong size)."""


class MaskError(ImageError):
    """Masks that :mod:`segdemo.mask_doctor` refuses; ``findings`` are all it found (a table's rows)."""

    def __init__(self, message: str, findings=()):
        super().__init__(message)
        self.findings = tuple(findings)


class CheckpointError(UserError):
    """A file that is not a usable segdemo checkpoint."""


class ArchiveError(UserError):
    """A dataset folder or zip that cannot be read safely (hostile names, a zip bomb, no known layout)."""


class AnnotationError(UserError):
    """A refused annotation operation (a bad name, a missing item, a mask of the wrong size)."""


class SettingsError(UserError):
    """A training setting, data source or option out of range, or a name that is not known."""


class WeightsUnavailable(UserError):
    """Pretrained weights that are neither cached, nor given, nor downloadable here."""


class LimitError(UserError):
    """A request over one of the limits of :mod:`segdemo.limits` (too large for the model, too
    long, too many files); the message names the limit and what would fit."""


class TrainerBusy(UserError):
    """A training run is already going."""


# --- what a person reads when something else went wrong ----------------------------------------------
# One home for these, used by the app's handlers, the training runs (in a thread or a child process)
# and the command line: no allocator, torch or traceback text reaches a visitor; the log keeps it.

OUT_OF_MEMORY = ("the server ran out of memory for this: try a smaller image, batch, crop or model (the details "
                 "are in the server's log)")
INTERNAL = "something went wrong inside the server (the details are in its log)"

# What torch and its allocators say when an allocation fails: a RuntimeError (CUDA's
# OutOfMemoryError is one too), not the MemoryError Python raises.
_ALLOCATION_FAILED = ("can't allocate memory", "defaultcpuallocator", "out of memory", "not enough memory",
                      "std::bad_alloc", "cannot allocate memory", "failed to allocate")


def says_allocation_failed(text: str) -> bool:
    """Whether ``text`` is an allocator's complaint (a message caught and passed on as text)."""
    text = text.lower()
    return any(marker in text for marker in _ALLOCATION_FAILED)


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a failed allocation (Python's, torch's CPU or GPU allocator)."""
    return isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and says_allocation_failed(str(error)))


def failure_message(error: BaseException) -> str:
    """What a person reads for ``error``: a user error's own words; a failed allocation as
    :data:`OUT_OF_MEMORY`; a file that could not be read or written, briefly; anything else as
    :data:`INTERNAL` with the error's type (the log keeps the traceback)."""
    if isinstance(error, UserError):
        return str(error)
    if out_of_memory(error):
        return OUT_OF_MEMORY
    if isinstance(error, OSError):
        return f"could not read or write a file: {error.strerror or type(error).__name__}"
    return f"something went wrong inside the server ({type(error).__name__}; the details are in its log)"
