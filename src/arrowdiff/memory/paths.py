"""Where the memory store lives when no path is given: one per-user data folder."""

from __future__ import annotations

import os
from pathlib import Path


def default_store_path() -> Path:
    """``$ARROWDIFF_HOME/memory`` if ARROWDIFF_HOME is set, else ``$XDG_DATA_HOME/arrowdiff/memory``, else
    ``~/.local/share/arrowdiff/memory`` (XDG Base Directory spec: a relative XDG_DATA_HOME is ignored)."""
    home = os.environ.get("ARROWDIFF_HOME")
    if home:
        return Path(home).expanduser() / "memory"
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "arrowdiff" / "memory"
