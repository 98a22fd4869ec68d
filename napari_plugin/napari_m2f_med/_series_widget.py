"""The "Series" widget: open another series of the DICOM folder an image was read from.

The reader opens the main series of a folder by the library's selection rules
(``m2f_med.io.series_selection``) and lists the other image series in the layer's metadata; this widget
shows that list and opens the chosen one beside it.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_m2f_med._layers import layer_info
from napari_m2f_med._reader import read_dicom_folder
from napari_m2f_med._viewer import reset_view_soon, watch_viewer

__all__ = ["SeriesWidget"]


class SeriesWidget(QWidget):
    """Pick one of the other series of the folder the selected image came from, and open it.

    Args:
        napari_viewer: the viewer (napari passes it).
    """

    def __init__(self, napari_viewer: Any):
        super().__init__()
        self.viewer = napari_viewer
        self._shown = False
        watch_viewer(napari_viewer)
        self.image_combo = QComboBox()
        self.series_combo = QComboBox()
        # long series lines (description · modality · images · UID) must not widen the dock
        for combo in (self.image_combo, self.series_combo):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(24)
        self.open_button = QPushButton("Open series")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Other series", self.series_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.open_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.image_combo.currentIndexChanged.connect(lambda _i: self._refresh_series())
        self.open_button.clicked.connect(lambda: self.open_selected())
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self._refresh_images()

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        """On first show (the dock has just narrowed the canvas) fit the view to the image again."""
        super().showEvent(event)
        if not self._shown:
            self._shown = True
            reset_view_soon(self.viewer)
    def _refresh_images(self, _event: Any = None) -> None:
        current = self.image_combo.currentText()
        names = [
            layer.name
            for layer in self.viewer.layers
            if (info := layer_info(layer)) is not None and info.kind == "image" and info.series_root
        ]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)
        self._refresh_series()

    def _refresh_series(self) -> None:
        self.series_combo.clear()
        name = self.image_combo.currentText()
        info = layer_info(self.viewer.layers[name]) if name in self.viewer.layers else None
        for k, (uid, description) in enumerate(info.series if info else []):
            self.series_combo.addItem(description, uid)
            self.series_combo.setItemData(k, f"{description}\nSeriesInstanceUID {uid}", Qt.ItemDataRole.ToolTipRole)
        self.open_button.setEnabled(self.series_combo.count() > 0)
        self.status.setText("" if self.series_combo.count() else "no other image series in this folder")

    def open_selected(self, series_uid: str | None = None) -> list[Any]:
        """Open a series of the selected image's folder as new layer(s).

        Args:
            series_uid: SeriesInstanceUID to open (default: the one chosen in the list).

        Returns:
            The layers added.

        Raises:
            VolumeError: the series cannot be loaded.
        """
        name = self.image_combo.currentText()
        info = layer_info(self.viewer.layers[name]) if name in self.viewer.layers else None
        uid = series_uid or self.series_combo.currentData()
        if info is None or not uid:
            return []
        added = []
        for data, kwargs, layer_type in read_dicom_folder(info.series_root, series_uid=uid):
            added.append(getattr(self.viewer, f"add_{layer_type}")(data, **kwargs))
        reset_view_soon(self.viewer)
        return added
