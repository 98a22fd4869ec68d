"""The "Review" widget: a table of the structures of a Labels layer; jump to, hide, edit and save each.

Columns (:data:`TABLE_COLUMNS`; extension point: append a :class:`Column` for e.g. a QC verdict): show
(tick box), label id, name, volume (mL), mean intensity (HU for CT), model confidence, a flag for
structures whose confidence is below the threshold (dark text on orange, readable in both napari themes),
and the QC verdict with its reasons (``m2f_med.inference.qc``, the same as ``m2f-med predict`` writes).
Clicking a row moves the slider to the structure and centres the view on it.

Editing actions on the selected structure, each one ``Labels.data_setitem`` call, so one Ctrl+Z (or the
Undo button) takes it back: fill between slices (``_interpolate``), remove small islands and smooth in mm
(closing / opening, ``_editing``). "Preserve other labels" (napari's ``preserve_labels``) is on by default
for model results, so painting one organ never overwrites its neighbours. "3D view" shows the selected
structure alone in 3D (``show_selected_label``) and back. "Save DICOM-SEG…" is disabled, with the reason as
tooltip and status, when the layer cannot become a SEG (``_writer.seg_export_problem``). Statistics come from
``m2f_med.inference.statistics.structure_statistics`` on the displayed arrays (the same voxels as the source
grid, only flipped/swapped, so volumes and means are identical). Interpolation fills the slices between
the slices a structure was drawn on (``_interpolate``), through ``Labels.data_setitem`` so one Ctrl+Z (or
the Undo button) takes it back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_m2f_med._colors import label_colormap
from napari_m2f_med._context import image_under_layer
from napari_m2f_med._editing import small_islands, smoothing_change
from napari_m2f_med._geometry import napari_affine_from_state
from napari_m2f_med._interpolate import interpolate_between_slices
from napari_m2f_med._layers import LayerInfo, layer_info
from napari_m2f_med._viewer import reset_view_soon, watch_viewer
from napari_m2f_med._writer import LayerSaveError, names_from_features, seg_export_problem

__all__ = [
    "ReviewWidget",
    "LOW_CONFIDENCE",
    "COLUMNS",
    "TABLE_COLUMNS",
    "Column",
    "MIN_ISLAND_ML",
    "SMOOTH_RADIUS_MM",
]

LOW_CONFIDENCE = 0.5
"""Default threshold: structures whose model confidence (mean query/class probability) is below it are flagged."""
MIN_ISLAND_ML = 0.5
"""Default "remove small islands" size: components of the selected structure below it (mL) are removed."""
SMOOTH_RADIUS_MM = 3.0
"""Default smoothing kernel radius (mm)."""


def _fmt_conf(row: dict[str, Any]) -> str:
    conf = row.get("confidence")
    return "" if conf is None or math.isnan(conf) else f"{conf:.2f}"


@dataclass(frozen=True)
class Column:
    """One column of the Review table after the "show" tick box.

    Attributes:
        header: the header text (``"mean"`` gets the intensity unit appended).
        text: ``row -> cell text``; ``row`` is a ``structure_statistics`` dict plus ``flagged``.
    """

    header: str
    text: Callable[[dict[str, Any]], str]


TABLE_COLUMNS: list[Column] = [
    Column("label", lambda r: str(r["label"])),
    Column("name", lambda r: str(r["name"])),
    Column("volume (mL)", lambda r: f"{r['volume_ml']:.1f}"),
    Column("mean", lambda r: "" if r["mean_intensity"] is None else f"{r['mean_intensity']:.0f}"),
    Column("confidence", _fmt_conf),
    Column("flag", lambda r: "LOW" if r["flagged"] else ""),
    # QC verdict and its reasons (m2f_med.inference.qc); empty without an image under the labels
    Column("QC", lambda r: "" if r.get("qc") in (None, "absent") else str(r["qc"])),
    Column("QC reasons", lambda r: "; ".join(r.get("qc_reasons") or [])),
]
"""The table's columns after "show"; extension point (append to add a column)."""

COLUMNS = ("show", *(c.header for c in TABLE_COLUMNS))
# flagged rows: orange with black text, legible on napari's dark and light themes
_FLAG_BACKGROUND = QColor(255, 200, 120)
_FLAG_FOREGROUND = QColor(0, 0, 0)


def _state(layer: Any) -> dict[str, Any]:
    """A layer's state through the public API (``as_layer_data_tuple``; no copy of the data)."""
    return layer.as_layer_data_tuple()[1]


class ReviewWidget(QWidget):
    """Structure table for one Labels layer of the viewer.

    Args:
        napari_viewer: the viewer (napari passes it).

    Attributes:
        rows: the statistics rows shown (dicts from ``structure_statistics`` plus ``flagged``).
        hidden: label ids currently hidden.
    """

    def __init__(self, napari_viewer: Any):
        super().__init__()
        self.viewer = napari_viewer
        self._shown = False
        watch_viewer(napari_viewer)
        self.rows: list[dict[str, Any]] = []
        self.hidden: set[int] = set()
        self.seg_problem: str | None = None
        self._seen: set[int] = set()
        self._updating = False

        self.layer_combo = QComboBox()
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(LOW_CONFIDENCE)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(240)
        self.table.verticalHeader().setVisible(False)
        self.refresh_button = QPushButton("Refresh")
        self.interpolate_button = QPushButton("Fill between slices")
        self.islands_button = QPushButton("Remove small islands")
        self.island_size = QDoubleSpinBox()
        self.island_size.setRange(0.001, 10000.0)
        self.island_size.setDecimals(3)
        self.island_size.setSuffix(" mL")
        self.island_size.setValue(MIN_ISLAND_ML)
        self.smooth_button = QPushButton("Smooth")
        self.smooth_method = QComboBox()
        self.smooth_method.addItems(["closing", "opening"])
        self.smooth_method.setToolTip("closing: fill holes and notches; opening: remove extrusions")
        self.smooth_radius = QDoubleSpinBox()
        self.smooth_radius.setRange(0.1, 50.0)
        self.smooth_radius.setSuffix(" mm")
        self.smooth_radius.setValue(SMOOTH_RADIUS_MM)
        self.view3d_button = QPushButton("3D view")
        self.view3d_button.setCheckable(True)
        self.preserve_check = QCheckBox("Preserve other labels while painting")
        self.undo_button = QPushButton("Undo")
        self.save_seg_button = QPushButton("Save DICOM-SEG…")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Labels", self.layer_combo)
        form.addRow("Flag confidence below", self.threshold)
        edit = QGridLayout()
        edit.addWidget(self.interpolate_button, 0, 0)
        edit.addWidget(self.view3d_button, 0, 1)
        edit.addWidget(self.islands_button, 1, 0)
        edit.addWidget(self.island_size, 1, 1)
        edit.addWidget(self.smooth_button, 2, 0)
        smooth_opts = QHBoxLayout()
        smooth_opts.addWidget(self.smooth_method)
        smooth_opts.addWidget(self.smooth_radius)
        edit.addLayout(smooth_opts, 2, 1)
        buttons = QHBoxLayout()
        for b in (self.refresh_button, self.undo_button, self.save_seg_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.table, 1)  # the table takes the height the dock gets
        layout.addWidget(self.preserve_check)
        layout.addLayout(edit)
        layout.addLayout(buttons)
        layout.addWidget(self.status)

        self.refresh_button.clicked.connect(self.refresh)
        self.interpolate_button.clicked.connect(lambda: self.interpolate_selected())
        self.islands_button.clicked.connect(lambda: self.remove_islands())
        self.smooth_button.clicked.connect(lambda: self.smooth())
        self.view3d_button.toggled.connect(self.show_3d)
        self.preserve_check.toggled.connect(self._on_preserve_toggled)
        self.save_seg_button.clicked.connect(lambda: self.save_seg())
        self.undo_button.clicked.connect(self.undo)
        self.threshold.valueChanged.connect(lambda _v: self.refresh())
        self.layer_combo.currentIndexChanged.connect(lambda _i: self.refresh())
        self.table.cellClicked.connect(self._on_cell_clicked)
        self.table.itemChanged.connect(self._on_item_changed)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        """On first show (the dock has just narrowed the canvas) fit the view to the image again."""
        super().showEvent(event)
        if not self._shown:
            self._shown = True
            reset_view_soon(self.viewer)
    # ------------------------------------------------------------------ layers
    def _refresh_layers(self, _event: Any = None) -> None:
        current = self.layer_combo.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]
        for layer in self.viewer.layers:  # model results (also read back from a SEG): preserve labels once
            info = layer_info(layer)
            if isinstance(layer, Labels) and info is not None and info.algorithm and id(layer) not in self._seen:
                layer.preserve_labels = True
            self._seen.add(id(layer))
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)
        self.refresh()

    @property
    def labels_layer(self) -> Any:
        """The Labels layer under review, or ``None``."""
        name = self.layer_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _image_for(self, layer: Any) -> tuple[np.ndarray | None, str]:
        """The image array on the labels' display grid and its modality (``None`` if there is none)."""
        image, meta = self._image_and_meta(layer)
        return image, str(meta.get("modality", ""))

    def _image_and_meta(self, layer: Any) -> tuple[np.ndarray | None, dict[str, Any]]:
        """The image array on the labels' display grid and its volume meta (``None``, ``{}`` if none)."""
        cand = self._image_info(layer)
        if cand is None:
            return None, {}
        return cand.geometry.to_display(cand.volume.numpy()[0]), dict(cand.meta)

    def _image_info(self, layer: Any) -> LayerInfo | None:
        """The :class:`LayerInfo` of the image the labels lie on (same display shape), or ``None``."""
        info = layer_info(layer)
        candidates: list[LayerInfo | None] = [
            image_under_layer(_state(layer), layer.data.shape, self.viewer)
        ]
        if info is not None and info.reference is not None:
            # the reference volume is shown by an image layer with the same geometry
            for image in self.viewer.layers:
                image_info = layer_info(image)
                if image_info is not None and image_info.volume is info.reference:
                    candidates.insert(0, image_info)
        for cand in candidates:
            if cand is not None and tuple(cand.geometry.display_shape) == tuple(layer.data.shape):
                return cand
        return None

    def _names(self, layer: Any) -> dict[int, str]:
        info = layer_info(layer)
        names = names_from_features(layer.features) or (dict(info.names) if info else {})
        counts = np.bincount(np.asarray(layer.data, dtype=np.int64).ravel()) if layer.data.size else []
        for value in np.flatnonzero(counts):
            if value != 0:
                names.setdefault(int(value), f"label {value}")
        return names

    # ------------------------------------------------------------------ table
    def refresh(self) -> None:
        """Recompute the statistics of the selected Labels layer and redraw the table."""
        from m2f_med.inference.statistics import structure_statistics

        layer = self.labels_layer
        self.rows = []
        if layer is not None and layer.data.ndim == 3:
            info = layer_info(layer)
            image, meta = self._image_and_meta(layer)
            modality = str(meta.get("modality", ""))
            names = self._names(layer)
            confidence = dict(info.confidence) if info else {}
            affine = napari_affine_from_state(_state(layer))
            data = np.asarray(layer.data)
            rows = structure_statistics(
                data,
                image if image is not None else np.zeros(data.shape, np.float32),
                names,
                affine=affine,
                modality=modality,
                confidence=confidence or None,
            )
            rows = self._quality_control(layer, rows, data, image, affine, meta, modality)
            for row in rows:
                if image is None:
                    row["mean_intensity"] = None
                conf = row.get("confidence")
                row["flagged"] = conf is not None and conf < self.threshold.value()
            self.rows = rows
        self._sync_layer_controls(layer)
        self._fill_table()

    def _quality_control(self, layer: Any, rows: list[dict[str, Any]], data: np.ndarray, image: np.ndarray | None,
                         affine: np.ndarray, meta: dict[str, Any], modality: str) -> list[dict[str, Any]]:
        """The rows with QC verdicts (``m2f_med.inference.qc``, as predict writes them); none without an image.
        Subclasses with another kind of structure (lesions) replace it."""
        if image is None:
            return rows
        from m2f_med.inference.qc import quality_control

        rows, _ = quality_control(rows, data, image, affine=affine, meta=meta, modality=modality)
        return rows

    def _sync_layer_controls(self, layer: Any) -> None:
        """Preserve-labels tick box and the SEG button's state (with the reason it is disabled)."""
        self.preserve_check.blockSignals(True)
        self.preserve_check.setChecked(bool(layer is not None and layer.preserve_labels))
        self.preserve_check.setEnabled(layer is not None)
        self.preserve_check.blockSignals(False)
        problem = seg_export_problem(layer, viewer=self.viewer) if layer is not None else "no labels layer"
        self.save_seg_button.setEnabled(problem is None)
        self.save_seg_button.setToolTip(problem or "save the labels as a DICOM-SEG referencing the series")
        self.seg_problem = problem

    def _fill_table(self) -> None:
        self._updating = True
        self.table.setRowCount(len(self.rows))
        unit = self.rows[0]["intensity_unit"] if self.rows else ""
        self.table.setColumnCount(len(COLUMNS))
        for c, column in enumerate(TABLE_COLUMNS, start=1):
            header = f"mean ({unit})" if column.header == "mean" and unit else column.header
            self.table.setHorizontalHeaderItem(c, QTableWidgetItem(header))
        for r, row in enumerate(self.rows):
            show = QTableWidgetItem()
            show.setFlags(
                Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
            )
            show.setCheckState(
                Qt.CheckState.Unchecked if row["label"] in self.hidden else Qt.CheckState.Checked
            )
            self.table.setItem(r, 0, show)
            for c, column in enumerate(TABLE_COLUMNS, start=1):
                item = QTableWidgetItem(column.text(row))
                if row["flagged"]:
                    item.setBackground(_FLAG_BACKGROUND)
                    item.setForeground(_FLAG_FOREGROUND)
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        self._updating = False

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if self._updating or item.column() != 0:
            return
        label = self.rows[item.row()]["label"]
        self.set_visible(label, item.checkState() == Qt.CheckState.Checked)

    def _on_cell_clicked(self, row: int, column: int) -> None:
        if column != 0 and 0 <= row < len(self.rows):
            self.jump_to(self.rows[row]["label"])

    # ------------------------------------------------------------------ actions
    def selected_label(self) -> int | None:
        """The label id of the selected table row, else the layer's selected label, else ``None``."""
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if rows:
            return int(self.rows[rows[0].row()]["label"])
        layer = self.labels_layer
        return int(layer.selected_label) if layer is not None and layer.selected_label else None

    def jump_to(self, label: int) -> np.ndarray | None:
        """Move the viewer to the centroid of structure ``label`` and select it for painting.

        Args:
            label: the structure's id.

        Returns:
            The centroid in world coordinates ``(z, y, x)`` mm, or ``None`` if the structure is empty.
        """
        from scipy import ndimage

        layer = self.labels_layer
        if layer is None:
            return None
        mask = np.asarray(layer.data) == label
        if not mask.any():
            self.status.setText(f"label {label} is empty")
            return None
        centroid = np.asarray(ndimage.center_of_mass(mask))
        # land on a slice that holds the structure (a C-shaped organ's centroid may lie outside it)
        axis = self._slice_axis(layer)
        others = tuple(a for a in range(mask.ndim) if a != axis)
        along = np.flatnonzero(mask.any(axis=others))
        centroid[axis] = along[np.argmin(np.abs(along - centroid[axis]))]
        world = np.asarray(layer.data_to_world(centroid), dtype=np.float64)
        self.viewer.dims.set_point(range(len(world)), tuple(world))
        displayed = list(self.viewer.dims.displayed)
        # the camera centre is always 3 world coordinates (z, y, x); give it the full point so the
        # in-plane position is the structure's, not the first displayed axes' values shifted
        center = np.asarray(self.viewer.camera.center, dtype=np.float64)
        center[-len(displayed):] = world[displayed]
        self.viewer.camera.center = tuple(center)
        layer.selected_label = int(label)
        self.viewer.layers.selection.active = layer
        return world

    def _slice_axis(self, layer: Any) -> int:
        """The layer data axis the viewer scrolls through in 2D (axis 0 in 3D view)."""
        not_displayed = list(self.viewer.dims.not_displayed)
        offset = self.viewer.dims.ndim - layer.ndim
        candidates = [a - offset for a in not_displayed if a - offset >= 0]
        return candidates[-1] if candidates else 0

    def set_visible(self, label: int, visible: bool) -> None:
        """Show or hide one structure (its colour becomes transparent; the voxels are untouched)."""
        layer = self.labels_layer
        if layer is None:
            return
        (self.hidden.discard if visible else self.hidden.add)(int(label))
        names = self._names(layer)
        cmap = label_colormap(names)
        colors = dict(cmap.color_dict)
        for hidden in self.hidden:
            if hidden in colors:
                colors[hidden] = np.array([*colors[hidden][:3], 0.0])
        layer.colormap = type(cmap)(color_dict=colors)

    def interpolate_selected(self, label: int | None = None) -> int:
        """Fill the slices between the slices where structure ``label`` is drawn (undoable).

        The slicing axis is the one the viewer scrolls through (``viewer.dims.not_displayed``); only
        background voxels are filled.

        Args:
            label: the structure's id (default: the selected row or the layer's selected label).

        Returns:
            The number of voxels filled.
        """
        layer = self.labels_layer
        label = label if label is not None else self.selected_label()
        if layer is None or not label:
            self.status.setText("select a structure first")
            return 0
        axis = self._slice_axis(layer)
        fill = interpolate_between_slices(np.asarray(layer.data), int(label), axis=axis, spacing=layer.scale)
        n = int(fill.sum())
        if n:
            layer.data_setitem(np.nonzero(fill), int(label))
        self.status.setText(
            f"filled {n} voxels of label {label}" if n else f"no gap to fill for label {label}"
        )
        self.refresh()
        return n

    def _target(self, label: int | None) -> tuple[Any, int | None]:
        layer = self.labels_layer
        label = label if label is not None else self.selected_label()
        if layer is None or not label or layer.data.ndim != 3:
            self.status.setText("select a structure first")
            return None, None
        return layer, int(label)

    def remove_islands(self, label: int | None = None, min_size_ml: float | None = None) -> int:
        """Remove the small connected pieces of structure ``label``, keeping its largest piece (undoable).

        Args:
            label: the structure's id (default: the selected row or the layer's selected label).
            min_size_ml: pieces below this volume (mL) go (default: the widget's value).

        Returns:
            The number of voxels set to background.
        """
        layer, label = self._target(label)
        if layer is None:
            return 0
        size = self.island_size.value() if min_size_ml is None else float(min_size_ml)
        drop = small_islands(np.asarray(layer.data), label, size, np.abs(layer.scale))
        n = int(drop.sum())
        if n:
            layer.data_setitem(np.nonzero(drop), 0)
        self.status.setText(
            f"removed {n} voxels of islands below {size:g} mL from label {label}" if n
            else f"label {label} has no island below {size:g} mL"
        )
        self.refresh()
        return n

    def smooth(self, label: int | None = None, radius_mm: float | None = None, method: str | None = None) -> int:
        """Smooth structure ``label`` by a binary closing or opening of radius ``radius_mm`` (undoable).

        Args:
            label: the structure's id (default: the selected row or the layer's selected label).
            radius_mm: kernel radius in mm (default: the widget's value).
            method: ``"closing"`` (fills holes, only into background) or ``"opening"`` (removes
                extrusions); default: the widget's choice.

        Returns:
            The number of voxels changed.
        """
        layer, label = self._target(label)
        if layer is None:
            return 0
        radius = self.smooth_radius.value() if radius_mm is None else float(radius_mm)
        method = method or self.smooth_method.currentText()
        change = smoothing_change(np.asarray(layer.data), label, radius, np.abs(layer.scale), method)
        n = int(change.sum())
        if n:
            layer.data_setitem(np.nonzero(change), label if method == "closing" else 0)
        self.status.setText(f"{method} {radius:g} mm changed {n} voxels of label {label}")
        self.refresh()
        return n

    def show_3d(self, on: bool = True, label: int | None = None) -> None:
        """Show the selected structure alone in a 3D view (``on``), or go back to 2D with all structures."""
        layer = self.labels_layer
        if on:
            layer, label = self._target(label)
            if layer is None:
                self.view3d_button.setChecked(False)
                return
            layer.selected_label = label
            layer.show_selected_label = True
            self.viewer.dims.ndisplay = 3
            self.viewer.reset_view()
        else:
            if layer is not None:
                layer.show_selected_label = False
            self.viewer.dims.ndisplay = 2
            self.viewer.reset_view()
        self.view3d_button.blockSignals(True)
        self.view3d_button.setChecked(bool(on))
        self.view3d_button.blockSignals(False)

    def _on_preserve_toggled(self, on: bool) -> None:
        layer = self.labels_layer
        if layer is not None:
            layer.preserve_labels = bool(on)

    def save_seg(self, path: str | None = None) -> list[str]:
        """Save the layer as a DICOM-SEG (asks for a file name when ``path`` is not given).

        Returns:
            The written paths; ``[]`` when the layer cannot become a SEG (the reason is in the status line
            and a napari notification) or the user cancelled.
        """
        from napari.utils.notifications import show_error

        layer = self.labels_layer
        problem = seg_export_problem(layer, viewer=self.viewer) if layer is not None else "no labels layer"
        if problem:
            self.status.setText(f"cannot save as DICOM-SEG: {problem}")
            return []
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save DICOM-SEG", f"{layer.name}.dcm", "DICOM (*.dcm)")
            if not path:
                return []
        try:
            written = layer.save(str(path), plugin="m2f-med")
        except LayerSaveError as err:
            self.status.setText(str(err))
            show_error(str(err))
            return []
        self.status.setText(f"saved {written[0] if written else path}")
        return list(written or [])

    def undo(self) -> None:
        """Undo the last edit of the Labels layer (napari's own history: paint, erase, fill)."""
        layer = self.labels_layer
        if layer is not None:
            layer.undo()
            self.refresh()
