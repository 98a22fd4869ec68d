"""One colour table for anatomical labels, shared by the napari plugin, the preview PNG and DICOM-SEG.

The same organ gets the same colour in every study and every output: the napari Labels layer
(``napari_m2f_med._colors.label_colormap``), ``preview.png`` (``m2f_med.inference.preview``) and the
``RecommendedDisplayCIELabValue`` of every DICOM-SEG segment (``m2f_med.io.dicom_seg``).

Named structures take colours close to 3D Slicer's GenericAnatomyColors (the table Slicer's
TotalSegmentator extension shows), matched on the snake_case name (``m2f_med.io.codes.normalise_label_name``;
``"kidney_left"`` falls back to ``"kidney"``). Unnamed or unknown label values take a fixed, id-indexed
palette, so a value painted by hand is visible and keeps its colour across sessions. numpy only: no Qt or
napari, so every layer (io, inference, plugin) can import it.
"""

from __future__ import annotations

import numpy as np

from m2f_med.io.codes import normalise_label_name

__all__ = ["ORGAN_COLORS", "PALETTE", "label_rgb", "label_color"]

# RGB 0-255; Slicer GenericAnatomyColors-like. Bones, vessels and bowel share families on purpose.
ORGAN_COLORS: dict[str, tuple[int, int, int]] = {
    "liver": (221, 130, 101),
    "spleen": (157, 108, 162),
    "kidney": (185, 102, 83),
    "gallbladder": (139, 150, 98),
    "stomach": (216, 132, 105),
    "pancreas": (249, 180, 111),
    "adrenal_gland": (244, 214, 49),
    "aorta": (224, 97, 76),
    "inferior_vena_cava": (0, 151, 206),
    "portal_vein_and_splenic_vein": (0, 112, 165),
    "pulmonary_artery": (0, 122, 171),
    "heart": (206, 110, 84),
    "lung": (197, 165, 145),
    "trachea": (182, 228, 255),
    "esophagus": (211, 171, 143),
    "duodenum": (255, 253, 229),
    "small_bowel": (205, 167, 142),
    "colon": (204, 168, 143),
    "rectum": (214, 175, 149),
    "urinary_bladder": (222, 154, 132),
    "prostate": (230, 158, 140),
    "spinal_cord": (244, 214, 49),
    "spine": (241, 214, 145),
    "vertebrae": (241, 214, 145),
    "sacrum": (241, 214, 145),
    "sternum": (241, 214, 145),
    "rib": (241, 214, 145),
    "femur": (241, 214, 145),
    "hip": (241, 214, 145),
    "skull": (241, 214, 145),
    "brain": (250, 250, 225),
    "thyroid_gland": (220, 245, 20),
    "iliac_artery": (216, 101, 79),
    "iliac_vena": (0, 151, 206),
    "autochthon": (192, 104, 88),
    "iliopsoas": (192, 104, 88),
    "gluteus_maximus": (192, 104, 88),
    "gluteus_medius": (192, 104, 88),
    "gluteus_minimus": (192, 104, 88),
    "costal_cartilages": (111, 184, 210),
    "neoplasm": (144, 238, 144),
    "tumor": (144, 238, 144),
    "tumour": (144, 238, 144),
    "gtv": (144, 238, 144),
    "lesion": (144, 238, 144),
}

# Fixed fallback palette (Glasbey-like, well separated on a grey CT background), indexed by label id.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
    (128, 128, 255),
)


def _lookup(name: str) -> tuple[int, int, int] | None:
    key = normalise_label_name(name)
    for candidate in (key, key.removesuffix("_left").removesuffix("_right")):
        if candidate in ORGAN_COLORS:
            return ORGAN_COLORS[candidate]
    # numbered variants: "vertebrae_L1", "rib_left_3", "gtv_1"
    for prefix, color in ORGAN_COLORS.items():
        if key.startswith(prefix + "_"):
            return color
    return None


def label_rgb(label_id: int, name: str | None = None) -> tuple[int, int, int]:
    """The RGB colour (0-255) of one label: the organ's colour when ``name`` is known, else the palette entry.

    Args:
        label_id: the integer label value (> 0; 0 is background and has no colour of its own).
        name: the structure's name, if known (e.g. ``"liver"``, ``"Kidney-Left"``, ``"vertebrae_L2"``).

    Returns:
        ``(r, g, b)`` ints in 0..255. Unknown names use ``PALETTE[(label_id - 1) % len(PALETTE)]``.
    """
    rgb = _lookup(name) if name else None
    if rgb is None:
        rgb = PALETTE[(int(label_id) - 1) % len(PALETTE)]
    return tuple(int(c) for c in rgb)


def label_color(label_id: int, name: str | None = None) -> np.ndarray:
    """RGBA colour (floats 0-1) of one label, as napari takes it; background (0) is transparent.

    Args:
        label_id: the integer label value.
        name: the structure's name, if known.

    Returns:
        ``(4,)`` float array: :func:`label_rgb` / 255 and alpha 1 (all zeros for label 0).
    """
    if label_id == 0:
        return np.zeros(4)
    return np.array([*(c / 255.0 for c in label_rgb(label_id, name)), 1.0])
