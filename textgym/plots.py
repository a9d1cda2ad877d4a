"""Figures the studies, the benchmark and the demo share: matplotlib without a display.

:func:`pyplot` gives ``matplotlib.pyplot`` on the Agg backend (no window, no display needed, the
same PNG bytes on every machine); :func:`save` lays a figure out, writes it and frees it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["pyplot", "save"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (imported only when a figure is asked for)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: str | os.PathLike[str], dpi: float | None = None) -> Path:
    """Tight layout, write ``path`` (PNG by its suffix), close the figure; return the path."""
    fig.tight_layout()
    fig.savefig(path, **({} if dpi is None else {"dpi": dpi}))
    pyplot().close(fig)
    return Path(path)
