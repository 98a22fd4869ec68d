"""SNOMED CT codes for DICOM-SEG segment descriptions, keyed by TotalSegmentator-style snake_case names.

A segment in a DICOM Segmentation carries a *category* (DICOM PS3.16 CID 7150) and a *type* (CID 7151 for
anatomy, CID 7159/7160 for lesions), optionally with a laterality modifier (CID 244) in
``SegmentedPropertyTypeModifierCodeSequence`` - the way dcmqi and TotalSegmentator encode
``kidney_left`` as "Kidney" + "Left". Names not in the table get the generic SCT 85756007 "Tissue" /
category "Tissue", so every segment is valid DICOM even when its meaning is only in its label.

Every code value below exists in pydicom's SNOMED CT dictionary (``pydicom.sr.codedict.codes.SCT``); the
test suite checks that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.sr.coding import Code

__all__ = ["SegmentCodes", "segment_codes", "normalise_label_name", "ORGAN_CODES"]

_ANATOMY = Code("91723000", "SCT", "Anatomical Structure")
_ABNORMAL = Code("49755003", "SCT", "Morphologically Abnormal Structure")
_TISSUE = Code("85756007", "SCT", "Tissue")
_LEFT = Code("7771000", "SCT", "Left")
_RIGHT = Code("24028007", "SCT", "Right")


@dataclass(frozen=True)
class SegmentCodes:
    """The coded meaning of one segment.

    Attributes:
        category: SegmentedPropertyCategoryCodeSequence item (CID 7150).
        type: SegmentedPropertyTypeCodeSequence item (CID 7151 / 7159 / 7160, or "Tissue").
        modifier: SegmentedPropertyTypeModifierCodeSequence item (laterality, CID 244), or None.
        generic: True when the name was not in the table and the generic "Tissue" code was used.
    """

    category: Code
    type: Code
    modifier: Code | None = None
    generic: bool = False


def _anat(value: str, meaning: str, modifier: Code | None = None) -> SegmentCodes:
    return SegmentCodes(_ANATOMY, Code(value, "SCT", meaning), modifier)


def _paired(stem: str, value: str, meaning: str) -> dict[str, SegmentCodes]:
    return {
        stem: _anat(value, meaning),
        f"{stem}_left": _anat(value, meaning, _LEFT),
        f"{stem}_right": _anat(value, meaning, _RIGHT),
    }


_NEOPLASM = SegmentCodes(_ABNORMAL, Code("108369006", "SCT", "Neoplasm"))

ORGAN_CODES: dict[str, SegmentCodes] = {
    "liver": _anat("10200004", "Liver"),
    "spleen": _anat("78961009", "Spleen"),
    **_paired("kidney", "64033007", "Kidney"),
    "stomach": _anat("69695003", "Stomach"),
    "pancreas": _anat("15776009", "Pancreas"),
    "aorta": _anat("15825003", "Aorta"),
    "gallbladder": _anat("28231008", "Gallbladder"),
    **_paired("lung", "39607008", "Lung"),
    "spinal_cord": _anat("2748008", "Spinal cord"),
    "heart": _anat("80891009", "Heart"),
    "esophagus": _anat("32849002", "Esophagus"),
    "trachea": _anat("44567001", "Trachea"),
    "duodenum": _anat("38848004", "Duodenum"),
    "small_bowel": _anat("30315005", "Small intestine"),
    "colon": _anat("71854001", "Colon"),
    "rectum": _anat("34402009", "Rectum"),
    "urinary_bladder": _anat("89837001", "Bladder"),
    "prostate": _anat("41216001", "Prostate"),
    "brain": _anat("12738006", "Brain"),
    "inferior_vena_cava": _anat("64131007", "Inferior vena cava"),
    "portal_vein_and_splenic_vein": _anat("32764006", "Portal vein"),
    "pulmonary_artery": _anat("81040000", "Pulmonary artery"),
    **_paired("adrenal_gland", "23451007", "Adrenal gland"),
    "thyroid_gland": _anat("69748006", "Thyroid"),
    "spine": _anat("421060004", "Spine"),
    "vertebrae": _anat("51282000", "Vertebra"),
    "sacrum": _anat("54735007", "Sacrum"),
    "sternum": _anat("56873002", "Sternum"),
    "skull": _anat("89546000", "Skull"),
    **_paired("femur", "71341001", "Femur"),
    **_paired("hippocampus", "5366008", "Hippocampus"),
    **_paired("caudate", "11000004", "Caudate Nucleus"),
    "corpus_callosum": _anat("88442005", "Corpus callosum"),
    **_paired("lateral_ventricle", "66720007", "Lateral Ventricle"),
    "neoplasm": _NEOPLASM,
    "lesion": SegmentCodes(_ABNORMAL, Code("52988006", "SCT", "Lesion")),
}

# other spellings seen in real label files (LUNG1 "Lung-Left", dcmqi "Spinal-Cord", US/UK spelling)
_ALIASES: dict[str, str] = {
    "tumour": "neoplasm",
    "tumor": "neoplasm",
    "gtv": "neoplasm",
    "left_kidney": "kidney_left",
    "right_kidney": "kidney_right",
    "left_lung": "lung_left",
    "right_lung": "lung_right",
    "oesophagus": "esophagus",
    "gall_bladder": "gallbladder",
    "bladder": "urinary_bladder",
    "cord": "spinal_cord",
    "ivc": "inferior_vena_cava",
    "thyroid": "thyroid_gland",
    "vertebral_column": "spine",
}

_NEOPLASM_PREFIX = re.compile(r"^(gtv|tumou?r|neoplasm)(_|$)")


def normalise_label_name(name: str) -> str:
    """Lower-case snake_case form of a label name: ``"Lung-Left"`` → ``"lung_left"``, ``"GTV 1"`` → ``"gtv_1"``."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def segment_codes(name: str) -> SegmentCodes:
    """Look up the SNOMED CT category/type (and laterality) for a label name.

    Args:
        name: a label name; matched after ``normalise_label_name`` against ``ORGAN_CODES`` and a few
            aliases (``"tumour"``, ``"GTV-1"``, ``"Lung-Left"`` ...).

    Returns:
        ``SegmentCodes``; for unknown names the generic category/type SCT 85756007 "Tissue" with
        ``generic=True``.
    """
    key = normalise_label_name(name)
    key = _ALIASES.get(key, key)
    if key in ORGAN_CODES:
        return ORGAN_CODES[key]
    if _NEOPLASM_PREFIX.match(key):
        return _NEOPLASM
    numbered = re.match(r"^(.+?)_\d+$", key)  # one instance of a class: "lesion 3" is coded as "lesion"
    if numbered:
        base = _ALIASES.get(numbered.group(1), numbered.group(1))
        if base in ORGAN_CODES:
            return ORGAN_CODES[base]
    return SegmentCodes(_TISSUE, _TISSUE, None, generic=True)
