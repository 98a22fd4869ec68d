"""napari colormaps from the one m2f-med colour table (``m2f_med.io.colors``).

The table itself lives in the library so that the preview PNG and DICOM-SEG (RecommendedDisplayCIELabValue)
use exactly the RGB a Labels layer shows; this module only turns it into a napari ``DirectLabelColormap``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from m2f_med.io.colors import ORGAN_COLORS, PALETTE, label_color, label_rgb

__all__ = ["ORGAN_COLORS", "PALETTE", "label_color", "label_rgb", "label_colormap"]

# Ids up to this get an explicit palette entry; larger ids use the None (default) entry.
_PALETTE_IDS = 255


def label_colormap(names: Mapping[int, str] | None = None, colors: Mapping[int, tuple] | None = None):
    """A napari ``DirectLabelColormap`` with the fixed colours for ``names`` and the palette elsewhere.

    Args:
        names: ``{label id: structure name}``; ids not listed use the id-indexed palette.
        colors: ``{label id: (r, g, b) 0-255}`` that override the table (e.g. the
            RecommendedDisplayCIELabValue of a SEG written by another tool).

    Returns:
        ``napari.utils.colormaps.DirectLabelColormap`` covering ids 0..max(255, largest named id); higher
        ids (painted by hand) fall back to a neutral magenta.
    """
    from napari.utils.colormaps import DirectLabelColormap

    names = dict(names or {})
    colors = dict(colors or {})
    top = max([_PALETTE_IDS, *names, *colors])
    color_dict: dict[int | None, np.ndarray] = {i: label_color(i, names.get(i)) for i in range(top + 1)}
    for i, rgb in colors.items():
        if int(i) != 0:
            color_dict[int(i)] = np.array([*(float(c) / 255.0 for c in rgb[:3]), 1.0])
    color_dict[None] = np.array([1.0, 0.0, 1.0, 1.0])
    return DirectLabelColormap(color_dict=color_dict)
