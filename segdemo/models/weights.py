"""Finding pretrained weights offline first: the local torch cache, a user-given file, and only
then a download where the network allows it (a hosted Space); never a crash when offline."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from ..errors import WeightsUnavailable

log = logging.getLogger(__name__)

# Where torchvision's published weights live (the URLs are written out so that listing models
# needs no torchvision import; tests check them against torchvision's own).
TORCHVISION_WEIGHTS = "https://download.pytorch.org/models"


def downloads_allowed() -> bool:
    """False when ``SEGDEMO_OFFLINE`` (or ``HF_HUB_OFFLINE``) is set: tests and offline machines
    never wait on the network."""
    for variable in ("SEGDEMO_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(variable, "").lower() in ("1", "true", "yes"):
            return False
    return True


def hub_dir() -> Path:
    """``torch.hub.get_dir()``, without importing torch for it (the app lists the pretrained
    models before torch is loaded). Until torch (with its ``hub``) is imported nobody can have
    called ``torch.hub.set_dir``, so torch's documented default holds: ``$TORCH_HOME/hub``, where
    ``$TORCH_HOME`` defaults to ``$XDG_CACHE_HOME/torch`` and that to ``~/.cache/torch``."""
    hub = getattr(sys.modules.get("torch"), "hub", None)  # None too while another thread imports torch
    if hub is not None:
        return Path(hub.get_dir())
    cache = os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(os.environ.get("TORCH_HOME", os.path.join(cache, "torch")))) / "hub"


def cached_path(url: str) -> Path:
    """Where ``torch.hub`` keeps the file downloaded from ``url``."""
    return hub_dir() / "checkpoints" / Path(url).name


def load_weights(url: str, *, path: str | os.PathLike | None = None, what: str = "weights") -> dict:
    """Return a state dict from ``path``, else the torch cache, else a download of ``url``.

    Raises:
        WeightsUnavailable: with a message saying where the file was looked for.
    """
    import torch

    candidates = [Path(path)] if path else []
    candidates.append(cached_path(url))
    for candidate in candidates:
        if candidate.is_file():
            try:
                return torch.load(candidate, map_location="cpu", weights_only=True)
            except Exception as error:  # a corrupt file: say which, try the next source
                log.warning("could not read %s from %s: %s", what, candidate, error)
    if path:
        raise WeightsUnavailable(f"{what}: {path} is not a readable state dict")
    if not downloads_allowed():
        raise WeightsUnavailable(f"{what} are not in the torch cache ({cached_path(url)}) and "
                                 "downloads are off (SEGDEMO_OFFLINE)")
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False)
    except Exception as error:  # no network, DNS, HTTP errors: all mean "not here"
        raise WeightsUnavailable(f"{what} could not be downloaded from {url} ({type(error).__name__}: "
                                 f"{str(error)[:120]}); put the file in {cached_path(url).parent}") from error
