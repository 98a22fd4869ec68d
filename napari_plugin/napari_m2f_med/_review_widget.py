"""The "Review" widget: a table of the structures of a Labels layer, jump to / hide / interpolate each.

Columns: show (tick box), label id, name, volume (mL), mean intensity (HU for CT), model confidence, and a
flag for structures whose confidence is below the threshold. Statistics come from
``m2f_med.inference.statistics.structure_statistics`` on the displayed arrays (the same voxels as the source
grid, only flipped/swapped, so volumes and means are identical). Interpolation fills the slices between
the slices a structure was drawn on (``_interpolate``), through ``Labels.data_setitem`` so one Ctrl+Z (or
the Undo button) takes it back.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from napari.layers import Labels
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
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
from napari_m2f_med._geometry import napari_affine_from_state
from napari_m2f_med._interpolate import interpolate_between_slices
from napari_m2f_med._layers import LayerInfo, layer_info
from napari_m2f_med._writer import names_from_features

__all__ = ["ReviewWidget", "LOW_CONFIDENCE", "COLUMNS"]

LOW_CONFIDENCE = 0.5
"""Default threshold: structures whose model confidence (mean query/class probability) is below it are flagged."""

COLUMNS = ("show", "label", "name", "volume (mL)", "mean", "confidence", "flag")
_FLAG_COLOR = QColor(255, 200, 120)


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
        self.rows: list[dict[str, Any]] = []
        self.hidden: set[int] = set()
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
        self.undo_button = QPushButton("Undo")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Labels", self.layer_combo)
        form.addRow("Flag confidence below", self.threshold)
        buttons = QHBoxLayout()
        for b in (self.refresh_button, self.interpolate_button, self.undo_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.table)
        layout.addLayout(buttons)
        layout.addWidget(self.status)

        self.refresh_button.clicked.connect(self.refresh)
        self.interpolate_button.clicked.connect(lambda: self.interpolate_selected())
        self.undo_button.clicked.connect(self.undo)
        self.threshold.valueChanged.connect(lambda _v: self.refresh())
        self.layer_combo.currentIndexChanged.connect(lambda _i: self.refresh())
        self.table.cellClicked.connect(self._on_cell_clicked)
        self.table.itemChanged.connect(self._on_item_changed)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------ layers
    def _refresh_layers(self, _event: Any = None) -> None:
        current = self.layer_combo.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]
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
        info = layer_info(layer)
        candidates: list[LayerInfo | None] = [
            image_under_layer(layer._get_state(), layer.data.shape, self.viewer)
        ]
        if info is not None and info.reference is not None:
            # the reference volume is shown by an image layer with the same geometry
            for image in self.viewer.layers:
                image_info = layer_info(image)
                if image_info is not None and image_info.volume is info.reference:
                    candidates.insert(0, image_info)
        for cand in candidates:
            if cand is not None and tuple(cand.geometry.display_shape) == tuple(layer.data.shape):
                return cand.geometry.to_display(cand.volume.numpy()[0]), str(cand.meta.get("modality", ""))
        return None, ""

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
            image, modality = self._image_for(layer)
            names = self._names(layer)
            confidence = dict(info.confidence) if info else {}
            affine = napari_affine_from_state(layer._get_state())
            data = np.asarray(layer.data)
            rows = structure_statistics(
                data,
                image if image is not None else np.zeros(data.shape, np.float32),
                names,
                affine=affine,
                modality=modality,
                confidence=confidence or None,
            )
            for row in rows:
                if image is None:
                    row["mean_intensity"] = None
                conf = row.get("confidence")
                row["flagged"] = conf is not None and conf < self.threshold.value()
            self.rows = rows
        self._fill_table()

    def _fill_table(self) -> None:
        self._updating = True
        self.table.setRowCount(len(self.rows))
        unit = self.rows[0]["intensity_unit"] if self.rows else ""
        self.table.setHorizontalHeaderItem(4, QTableWidgetItem(f"mean ({unit})" if unit else "mean"))
        for r, row in enumerate(self.rows):
            show = QTableWidgetItem()
            show.setFlags(
                Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
            )
            show.setCheckState(
                Qt.CheckState.Unchecked if row["label"] in self.hidden else Qt.CheckState.Checked
            )
            self.table.setItem(r, 0, show)
            values = [
                str(row["label"]),
                row["name"],
                f"{row['volume_ml']:.1f}",
                "" if row["mean_intensity"] is None else f"{row['mean_intensity']:.0f}",
                ""
                if row["confidence"] is None or math.isnan(row["confidence"])
                else f"{row['confidence']:.2f}",
                "LOW" if row["flagged"] else "",
            ]
            for c, text in enumerate(values, start=1):
                item = QTableWidgetItem(text)
                if row["flagged"]:
                    item.setBackground(_FLAG_COLOR)
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
        self.viewer.camera.center = tuple(world[displayed])
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

    def undo(self) -> None:
        """Undo the last edit of the Labels layer (napari's own history: paint, erase, fill)."""
        layer = self.labels_layer
        if layer is not None:
            layer.undo()
            self.refresh()
