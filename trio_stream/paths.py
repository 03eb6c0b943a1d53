"""Where tstream keeps its files, following the XDG base directory specification.

Each function returns the directory without creating it; callers that write create it
(with :func:`ensure_dir`). A relative path in an ``XDG_*`` variable is ignored, as the
specification asks.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Final

APP: Final = "tstream"


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable, "")
    if value and os.path.isabs(value):
        return Path(value) / APP
    return Path.home() / fallback / APP


def data_dir() -> Path:
    """``$XDG_DATA_HOME/tstream``, by default ``~/.local/share/tstream``."""
    return _xdg("XDG_DATA_HOME", ".local/share")


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/tstream``, by default ``~/.config/tstream``."""
    return _xdg("XDG_CONFIG_HOME", ".config")


def runtime_dir() -> Path:
    """``$XDG_RUNTIME_DIR/tstream``; without it, a per-user directory under the temp dir."""
    value = os.environ.get("XDG_RUNTIME_DIR", "")
    if value and os.path.isabs(value):
        return Path(value) / APP
    return Path(tempfile.gettempdir()) / f"{APP}-{os.getuid()}"


def default_store_path() -> Path:
    """The embedded store's database file: ``data_dir() / "tstream.db"``."""
    return data_dir() / "tstream.db"


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) readable by the user only, if missing.

    Returns:
        ``path``.

    Raises:
        OSError: when it cannot be created.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
