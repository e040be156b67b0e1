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
