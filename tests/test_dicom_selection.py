"""Series selection rules (``select_series``) on hand-built indexes and on the real TCIA / DICOMDIR trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from m2f_med.io.dicom_index import DicomIndex, InstanceInfo, SeriesInfo, StudyInfo, index_dicom_tree
from m2f_med.io.errors import VolumeError
from m2f_med.io.series_selection import (
    AmbiguousSeriesError,
    NoSeriesError,
    SeriesSelectionError,
    select_series,
    series_exclusion,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SC = "1.2.840.10008.5.1.4.1.1.7"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def series(uid, n=10, *, modality="CT", sop=CT, iop=AXIAL, image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
           study="1.2.3", samples=1, frames=1) -> SeriesInfo:
    inst = [
        InstanceInfo(Path(f"/x/{uid}/{k}"), f"{uid}.{k}", sop, modality, image_type, iop, (0.0, 0.0, float(k)),
                     512, 512, frames, samples, k, "1.2.840.10008.1.2.1")
        for k in range(n)
    ]
    return SeriesInfo(study, uid, modality=modality, instances=inst)


def make_index(*items: SeriesInfo) -> DicomIndex:
    idx = DicomIndex(root=Path("/x"))
    for s in items:
        idx.studies.setdefault(s.study_uid, StudyInfo(s.study_uid)).series[s.series_uid] = s
    return idx


def test_most_images_wins_among_axial_ct():
    idx = make_index(series("small", 20), series("big", 120), series("mr", 300, modality="MR", sop=MR))
    assert select_series(idx).series_uid == "big"
    assert select_series(idx, modality="MR").series_uid == "mr"
    assert select_series(idx, modality=None).series_uid == "mr"


def test_non_image_secondary_capture_localizer_derived_and_rgb_are_never_chosen():
    idx = make_index(
        series("ct", 5),
        series("seg", 400, sop=SEG, modality="CT"),
        series("rs", 400, sop=RTSTRUCT, modality="CT"),
        series("sc", 400, sop=SC),
        series("scout", 400, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER")),
        series("mpr", 400, image_type=("DERIVED", "SECONDARY", "MPR")),
        series("rgb", 400, samples=3),
    )
    assert select_series(idx).series_uid == "ct"
    reasons = {s.series_uid: series_exclusion(s, modality="CT") for s in idx}
    assert reasons == {
        "ct": None, "seg": "SEG", "rs": "RTSTRUCT", "sc": "secondary capture", "scout": "localizer",
        "mpr": "DERIVED", "rgb": "colour (RGB) images",
    }


def test_axial_preferred_over_a_larger_coronal_series():
    idx = make_index(series("cor", 300, iop=CORONAL), series("ax", 100))
    assert select_series(idx).series_uid == "ax"
    assert select_series(idx, orientation="CORONAL").series_uid == "cor"
    # no axial candidate: the preference does not exclude
    assert select_series(make_index(series("cor", 300, iop=CORONAL))).series_uid == "cor"


def test_tie_raises_with_the_tied_candidates():
    idx = make_index(series("soft", 100), series("bone", 100), series("thin", 40))
    with pytest.raises(AmbiguousSeriesError) as err:
        select_series(idx)
    e = err.value
    assert isinstance(e, SeriesSelectionError) and isinstance(e, VolumeError)
    assert sorted(s.series_uid for s in e.candidates) == ["bone", "soft"]
    assert "soft" in str(e) and "bone" in str(e) and "--series UID" in str(e)


def test_explicit_uid_is_honoured_even_when_rules_would_not_pick_it():
    idx = make_index(series("big", 100), series("mpr", 5, image_type=("DERIVED", "SECONDARY")))
    assert select_series(idx, series_uid="mpr").series_uid == "mpr"
    with pytest.raises(NoSeriesError, match="not in this folder"):
        select_series(idx, series_uid="9.9.9")


def test_explicit_uid_of_a_non_image_object_is_refused():
    idx = make_index(series("ct", 10), series("seg", 1, sop=SEG, modality="SEG"))
    with pytest.raises(NoSeriesError, match="SEG, not an image series"):
        select_series(idx, series_uid="seg")


def test_derived_only_taken_when_no_original_is_there():
    mpr = series("mpr", 50, image_type=("DERIVED", "SECONDARY", "MPR"))
    assert select_series(make_index(mpr)).series_uid == "mpr"
    idx = make_index(mpr, series("orig", 10))
    assert select_series(idx).series_uid == "orig"
    assert select_series(idx, allow_derived=True).series_uid == "mpr"


def test_nothing_suitable_lists_every_series_with_its_reason():
    idx = make_index(series("seg", 3, sop=SEG, modality="SEG"), series("mr", 9, modality="MR", sop=MR))
    with pytest.raises(NoSeriesError, match="no CT image series") as err:
        select_series(idx)
    assert dict((s.series_uid, why) for s, why in err.value.excluded) == {
        "seg": "modality SEG, not CT", "mr": "modality MR, not CT",
    }


def test_several_studies_are_ambiguous_unless_one_is_named():
    idx = make_index(series("a", 100, study="1.1"), series("b", 50, study="2.2"))
    with pytest.raises(AmbiguousSeriesError, match="2 studies"):
        select_series(idx)
    assert select_series(idx, study_uid="2.2").series_uid == "b"


def test_enhanced_multiframe_counts_frames_not_files():
    idx = make_index(series("classic", 60), series("enhanced", 1, frames=200))
    assert select_series(idx).series_uid == "enhanced"


def test_real_sarcoma_patient_each_modality(data_dir):
    idx = index_dicom_tree(data_dir / "tcia/soft_tissue_sarcoma/STS_001")
    descriptions = {m: select_series(idx, modality=m).description for m in ("CT", "MR", "PT")}
    assert descriptions == {
        "CT": "IBSI_1_STS_001_CT_image", "MR": "IBSI_1_STS_001_MR_T1_image", "PT": "IBSI_1_STS_001_PET_image",
    }
    with pytest.raises(NoSeriesError, match="no US image series"):
        select_series(idx, modality="US")


def test_real_multi_patient_tree_refuses_to_guess(data_dir):
    idx = index_dicom_tree(data_dir / "tcia/soft_tissue_sarcoma")
    with pytest.raises(AmbiguousSeriesError, match="3 studies") as err:
        select_series(idx, modality="CT")
    assert len(err.value.candidates) == 3
    study = err.value.candidates[1].study_uid
    assert select_series(idx, modality="CT", study_uid=study).study_uid == study


def test_real_dicomdir_tree_skips_scouts(data_dir):
    idx = index_dicom_tree(data_dir / "dicom_edge_cases/pydicom_testfiles/dicomdirtests/98892001")
    chosen = select_series(idx)
    assert chosen.description == "SmartScore - Gated 0.5 sec"
    scout = next(s for s in idx if s.description == "Scout")
    assert series_exclusion(scout, modality="CT") == "localizer"
