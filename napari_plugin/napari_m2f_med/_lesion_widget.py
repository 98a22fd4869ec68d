"""The "Lesion review" widget: the Review table for a lesion instance map, and per-lesion decisions.

A lesion result (``instances.nii.gz`` of ``m2f-med predict`` with ``instances.json`` beside it) opens as a
Labels layer with one id per lesion; the reader puts each lesion's score into the layer's confidence, so
the Review table (:class:`~napari_m2f_med._review_widget.ReviewWidget`, which this widget extends) shows
volume, mean HU, score, the LOW flag and the lesion QC verdict with its reasons
(:mod:`m2f_med.inference.lesion_qc`, with the settings ``instances.json`` records) per lesion. Rows are sorted
by decreasing score.

Decisions, each one ``Labels.data_setitem`` call where voxels change, so one Ctrl+Z (or Undo) takes it
back:

* **accept**: the lesion is kept as it is (recorded, no voxel changes);
* **reject**: its voxels become background;
* **merge** ``a`` and ``b``: ``b``'s voxels take id ``a`` (score: volume-weighted mean);
* **split** by painting: :meth:`LesionReviewWidget.start_split` selects a new free id (with the parent's
  score) in paint mode; the voxels painted over the lesion become a second lesion. Or
  :meth:`LesionReviewWidget.split_components` gives each 3D connected piece of a lesion its own id (after
  erasing the bridge between two lesions).

:meth:`LesionReviewWidget.save` writes the kept lesions as a NIfTI instance map (ids unchanged), its
``instances.json`` (the table, with each lesion's review status) and, for a DICOM series, a DICOM-SEG with
one segment per lesion (``m2f_med.inference.instance_outputs.write_lesion_seg``; an edited lesion is
SEMIAUTOMATIC, an added one MANUAL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import QGridLayout, QPushButton

from napari_m2f_med._layers import edited_values, layer_info
from napari_m2f_med._review_widget import ReviewWidget

__all__ = ["LesionReviewWidget"]


class LesionReviewWidget(ReviewWidget):
    """Review widget for lesion instance maps: sorted by score, accept / reject / merge / split, save.

    Args:
        napari_viewer: the viewer (napari passes it).

    Attributes:
        status_of: ``{lesion id: "accepted"}`` for lesions accepted so far (others are "unreviewed").
    """

    def __init__(self, napari_viewer: Any):
        self.status_of: dict[int, str] = {}
        super().__init__(napari_viewer)
        self.accept_button = QPushButton("Accept")
        self.reject_button = QPushButton("Reject")
        self.merge_button = QPushButton("Merge selected")
        self.split_button = QPushButton("Split by painting")
        self.save_lesions_button = QPushButton("Save lesions…")
        grid = QGridLayout()
        for i, b in enumerate((self.accept_button, self.reject_button, self.merge_button, self.split_button,
                               self.save_lesions_button)):
            grid.addWidget(b, i // 3, i % 3)
        self.layout().insertLayout(2, grid)
        self.table.setSelectionMode(self.table.SelectionMode.ExtendedSelection)
        self.accept_button.clicked.connect(lambda: self.accept())
        self.reject_button.clicked.connect(lambda: self.reject())
        self.merge_button.clicked.connect(lambda: self.merge())
        self.split_button.clicked.connect(lambda: self.start_split())
        self.save_lesions_button.clicked.connect(lambda: self.save())

    # ------------------------------------------------------------------ table
    def refresh(self) -> None:
        """The Review table of the layer's lesions (present voxels only), sorted by decreasing score."""
        super().refresh()
        self.rows = [r for r in self.rows if r["voxels"] > 0]
        for r in self.rows:
            r["status"] = self.status_of.get(int(r["label"]), "unreviewed")
        self.rows.sort(key=lambda r: (-(r.get("confidence") or 0.0), r["label"]))
        self._fill_table()

    def _quality_control(self, layer: Any, rows: list[dict[str, Any]], data: np.ndarray, image: np.ndarray | None,
                         affine: np.ndarray, meta: dict[str, Any], modality: str) -> list[dict[str, Any]]:
        """The lesion QC that ``m2f-med predict`` wrote (same settings and modality, from ``instances.json``;
        defaults without them), recomputed on the edited voxels, instead of the organ QC.

        Measured on the source grid (field of view, body parts), since the display grid is ``(Z, Y, X)``.
        """
        from m2f_med.inference.lesion_qc import LesionQCSettings, field_of_view_mm, lesion_quality_control

        if not rows:
            return rows
        settings, note = _qc_settings(layer_info(layer))
        cand = self._image_info(layer) if image is not None else None
        body = fov = None
        if cand is not None:
            modality = _qc_modality(layer_info(layer), cand.meta, cand.volume)
            fov = field_of_view_mm(cand.geometry.source_shape, cand.geometry.source_affine)
            body = self._body_on_display(cand) if modality.upper() == "CT" else None
        rows, _ = lesion_quality_control(
            rows, data, image, affine, settings or LesionQCSettings(),
            modality=modality if cand is not None else "", id_key="label", score_key="confidence",
            field_of_view=fov, body=body)
        if note:
            self.status.setText(note)
        return rows

    def _body_on_display(self, cand: Any) -> np.ndarray:
        """The body-parts mask of the image (source grid, axial slices), shown like the image; cached."""
        from m2f_med.inference.lesion_qc import body_parts_mask

        key = id(cand.volume)
        if getattr(self, "_body_cache", (None, None))[0] != key:
            self._body_cache = (key, cand.geometry.to_display(body_parts_mask(cand.volume.numpy()[0])))
        return self._body_cache[1]

    def _scores(self) -> dict[int, float]:
        info = layer_info(self.labels_layer) if self.labels_layer is not None else None
        return info.confidence if info is not None else {}

    def selected_labels(self) -> list[int]:
        """Lesion ids of the selected table rows (table order)."""
        model = self.table.selectionModel()
        rows = sorted(i.row() for i in model.selectedRows()) if model else []
        return [int(self.rows[r]["label"]) for r in rows if r < len(self.rows)]

    def _one(self, label: int | None) -> int | None:
        if label is not None:
            return int(label)
        chosen = self.selected_labels()
        return chosen[0] if chosen else self.selected_label()

    # ------------------------------------------------------------------ decisions
    def accept(self, label: int | None = None) -> None:
        """Mark lesion ``label`` (default: the selected row) as accepted."""
        label = self._one(label)
        if label:
            self.status_of[label] = "accepted"
            self.status.setText(f"lesion {label} accepted")
            self.refresh()

    def reject(self, label: int | None = None) -> int:
        """Remove lesion ``label``'s voxels (undoable); returns how many were removed."""
        layer, label = self.labels_layer, self._one(label)
        if layer is None or not label:
            self.status.setText("select a lesion first")
            return 0
        where = np.nonzero(np.asarray(layer.data) == label)
        n = int(where[0].size)
        if n:
            layer.data_setitem(where, 0)
        self.status_of.pop(label, None)
        self.status.setText(f"lesion {label} rejected ({n} voxels removed)")
        self.refresh()
        return n

    def merge(self, keep: int | None = None, other: int | None = None) -> int:
        """Give lesion ``other``'s voxels the id ``keep`` (default: the first two selected rows); undoable.

        Returns:
            The number of voxels relabelled.
        """
        layer = self.labels_layer
        if keep is None or other is None:
            chosen = self.selected_labels()
            if len(chosen) < 2:
                self.status.setText("select two lesions to merge")
                return 0
            keep, other = chosen[0], chosen[1]
        keep, other = int(keep), int(other)
        data = np.asarray(layer.data)
        n_keep, n_other = int((data == keep).sum()), int((data == other).sum())
        where = np.nonzero(data == other)
        if n_other:
            layer.data_setitem(where, keep)
        scores = self._scores()
        if keep in scores and other in scores and n_keep + n_other:
            scores[keep] = (scores[keep] * n_keep + scores[other] * n_other) / (n_keep + n_other)
        self.status.setText(f"lesion {other} merged into lesion {keep}")
        self.refresh()
        return n_other

    def _free_id(self) -> int:
        data = np.asarray(self.labels_layer.data)
        return int(max(int(data.max(initial=0)), *self._scores().keys(), 0)) + 1

    def start_split(self, label: int | None = None) -> int | None:
        """Split lesion ``label`` by painting: select a new free id with its score, in paint mode.

        Returns:
            The new id (paint the part of the lesion that is a second lesion with it), or ``None``.
        """
        layer, label = self.labels_layer, self._one(label)
        if layer is None or not label:
            self.status.setText("select a lesion first")
            return None
        new = self._free_id()
        scores = self._scores()
        if label in scores:
            scores[new] = scores[label]
        layer.preserve_labels = False
        layer.selected_label = new
        layer.mode = "paint"
        self.status.setText(f"paint the part of lesion {label} that is another lesion: it becomes lesion {new}")
        return new

    def split_components(self, label: int | None = None) -> list[int]:
        """Give each 3D connected piece (26-connectivity) of lesion ``label`` but the largest a new id (undoable).

        Returns:
            The new ids.
        """
        from scipy import ndimage

        layer, label = self.labels_layer, self._one(label)
        if layer is None or not label:
            return []
        data = np.asarray(layer.data)
        comp, n = ndimage.label(data == label, structure=ndimage.generate_binary_structure(3, 3))
        if n < 2:
            self.status.setText(f"lesion {label} is one piece")
            return []
        sizes = np.bincount(comp.ravel())[1:]
        largest = int(np.argmax(sizes)) + 1
        new_ids, scores = [], self._scores()
        for piece in range(1, n + 1):
            if piece == largest:
                continue
            new = self._free_id()
            layer.data_setitem(np.nonzero(comp == piece), new)
            if label in scores:
                scores[new] = scores[label]
            new_ids.append(new)
        self.status.setText(f"lesion {label} split into {[label, *new_ids]}")
        self.refresh()
        return new_ids

    # ------------------------------------------------------------------ saving
    def save(self, nifti_path: str | None = None, seg_path: str | None = None) -> list[str]:
        """Write the kept lesions: NIfTI instance map + ``instances.json`` and, when possible, a DICOM-SEG.

        Args:
            nifti_path: output ``.nii.gz`` (asks when ``None``); ``instances.json`` is written beside it
                (``<stem>.json`` when the file is not called ``instances.nii.gz``).
            seg_path: output ``.dcm``; ``None`` writes ``<stem>.seg.dcm`` beside the NIfTI when the layer
                belongs to a DICOM series opened with m2f-med, else no SEG.

        Returns:
            The written paths.
        """
        from qtpy.QtWidgets import QFileDialog

        from m2f_med.inference.instance_outputs import write_lesion_seg
        from m2f_med.inference.instances import Instances, instance_table, write_instances_json
        from m2f_med.inference.lesion_qc import LesionQCSettings, lesion_quality_control
        from m2f_med.io.writers import write_nifti
        from napari_m2f_med._writer import _label_volume, seg_export_problem

        layer = self.labels_layer
        if layer is None:
            return []
        if nifti_path is None:
            nifti_path, _ = QFileDialog.getSaveFileName(self, "Save lesions", "instances.nii.gz", "NIfTI (*.nii.gz)")
            if not nifti_path:
                return []
        data, state, _ = layer.as_layer_data_tuple()
        label, info, reference, _names = _label_volume(data, state)
        ids = np.asarray(label[0].numpy() if hasattr(label[0], "numpy") else label[0]).astype(np.int32)
        scores = self._scores()
        present = [int(v) for v in np.unique(ids) if v]
        inst = Instances(ids, (ids > 0).astype(np.uint8), {i: 1 for i in present},
                         {i: float(scores.get(i, 1.0)) for i in present})
        image = reference if reference is not None else label
        rows = instance_table(inst, image, {1: "lesion"})
        settings, qc_note = _qc_settings(info)
        modality = _qc_modality(info, reference.meta, reference) if reference is not None else ""
        rows, qc_scan = lesion_quality_control(
            rows, ids, np.asarray(reference[0]) if reference is not None else None,
            np.asarray(image.affine, dtype=np.float64), settings or LesionQCSettings(), modality=modality)
        edited = edited_values(np.asarray(data), info) if info is not None and info.algorithm else set()
        model_made = info.model_values if info is not None and info.algorithm else set()
        for row in rows:
            row["status"] = self.status_of.get(row["id"], "unreviewed")
            row["edited"] = row["id"] in edited or (bool(model_made) and row["id"] not in model_made)
        out = Path(nifti_path)
        written = [str(write_nifti(label, out, label=True))]
        stem = out.name.removesuffix(".gz").removesuffix(".nii")
        table = out.with_name("instances.json" if stem == "instances" else f"{stem}.json")
        written.append(str(write_instances_json(table, rows, {1: "lesion"}, [1], note="" if rows else "no lesion",
                                                reviewed=True, instance_map=out.name,
                                                qc_settings=settings.as_dict() if settings else None,
                                                qc_scan=qc_scan, **({"qc_note": qc_note} if qc_note else {}))))
        problem = seg_export_problem(layer, viewer=self.viewer)
        if seg_path is None and problem is None:
            seg_path = str(out.with_name(f"{stem}.seg.dcm"))
        if seg_path is not None and problem is None and rows:
            algorithm = info.algorithm if info is not None and info.algorithm else None
            written.append(str(write_lesion_seg(label, reference, seg_path, rows, algorithm=algorithm)))
        elif seg_path is not None and problem:
            self.status.setText(f"DICOM-SEG not written: {problem}")
        self.status.setText(f"saved {len(rows)} lesions to {out.name}" + (" and DICOM-SEG" if len(written) > 2 else ""))
        return written


def _qc_settings(info: Any) -> tuple[Any, str]:
    """The lesion QC settings ``instances.json`` recorded (layer meta ``lesion_qc``), and a note when they are
    absent or invalid (then ``None``: the defaults apply, without field-of-view or volume limits)."""
    from m2f_med.inference.lesion_qc import LesionQCSettings

    spec = (info.meta.get("lesion_qc") if info is not None else None) or None
    if spec is None:
        return None, ""
    try:
        return LesionQCSettings.from_mapping(spec), ""
    except (TypeError, ValueError) as err:
        return None, f"lesion QC settings of instances.json ignored ({err}): defaults used"


def _qc_modality(info: Any, image_meta: Any, volume: Any) -> str:
    """Modality for the lesion QC: the image's, else the one predict recorded, else CT when the intensities
    look like CT HU (``m2f_med.inference.modality.ct_intensity_problem``, predict's own test)."""
    from m2f_med.inference.modality import ct_intensity_problem

    modality = str((image_meta or {}).get("modality", "") or "")
    if not modality and info is not None:
        modality = str(info.meta.get("lesion_qc_modality", "") or "")
    if not modality and volume is not None:
        modality = "CT" if ct_intensity_problem(volume) is None else ""
    return modality
