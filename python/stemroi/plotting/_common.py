"""What every figure function shares: a headless-safe pyplot, one colour
palette, and ``save_figure`` (atomic by default)."""
from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, Sequence

from ..detection.roi import UNKNOWN

__all__ = ["save_figure", "class_colors", "palette"]

# matplotlib's tab10, as hex so the colours do not depend on the matplotlib version
_TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf"]


def pyplot():
    """``matplotlib.pyplot``; the Agg backend is selected when pyplot is not
    imported yet and there is no display, so figures work on headless machines
    without overriding a backend the user chose."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def palette(n: int) -> List:
    """``n`` distinct colours: tab10 up to 10, tab20 beyond (cycled past 20)."""
    if n <= len(_TAB10):
        return _TAB10[:n]
    cmap = pyplot().get_cmap("tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def class_colors(class_names: Sequence[str], bulk_label: Optional[str] = None, *,
                 include_bulk: bool = False) -> Dict[str, object]:
    """Stable colour per class in ``class_names`` order, white for ``"unknown"``.

    The bulk class gets no colour unless ``include_bulk`` (then it takes its
    place in the palette like any other class)."""
    names = [str(c) for c in class_names if include_bulk or c != bulk_label]
    colors: Dict[str, object] = dict(zip(names, palette(len(names))))
    colors.setdefault(UNKNOWN, "#ffffff")
    return colors


def save_figure(fig_or_ax, path, dpi: Optional[float] = None, *, atomic: bool = True, **savefig_kwargs):
    """Save a matplotlib Figure (or the figure of an Axes) to ``path``; the
    format comes from the suffix.

    ``dpi=None`` uses the figure's own dpi. ``bbox_inches`` defaults to
    ``"tight"`` so legends and colorbars outside the axes are kept. With
    ``atomic`` (default) the file is written to a temporary name and renamed,
    so an interrupted save never leaves a truncated file. Returns the figure.
    """
    fig = fig_or_ax if hasattr(fig_or_ax, "savefig") else getattr(fig_or_ax, "figure", None)
    if fig is None or not hasattr(fig, "savefig"):
        raise TypeError(f"fig_or_ax must be a matplotlib Figure or Axes, got {type(fig_or_ax).__name__}")
    savefig_kwargs.setdefault("bbox_inches", "tight")
    savefig_kwargs["dpi"] = fig.dpi if dpi is None else dpi
    if atomic:
        from .._atomic import atomic_savefig

        atomic_savefig(fig, path, **savefig_kwargs)
    else:
        fig.savefig(os.fspath(path), **savefig_kwargs)
    return fig
