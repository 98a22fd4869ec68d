"""The "Segment" widget: run a MONAI bundle (``m2f_med.inference``) on an image layer, off the GUI thread.

Loading the bundle and ``predict_volume`` run in a napari ``thread_worker``; the progress bar counts the
slices the model has processed (in model space, exact for both of ``predict_volume``'s paths) and Cancel
stops the run at the next window batch. The result is a Labels layer on the image's grid with the model's
structure names (``features``), the fixed colour table (``_colors``) and the per-structure confidence
(mean probability of the predicted class, from Mask2Former's query class scores and mask probabilities,
Cheng et al. 2022 Sec. 3.4).

Progress and Cancel go through the inferer's public ``callback(done, total)`` hook (``VolumeInferer``):
the callback emits a Qt signal and raises ``Cancelled`` once the user has pressed Cancel.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_m2f_med._layers import labels_layer_data, layer_info
from napari_m2f_med._viewer import reset_view_soon, watch_viewer

__all__ = ["SegmentWidget", "Cancelled", "default_bundle", "image_volume"]

_DEFAULT_BUNDLE = Path("bundles") / "m2f_ct_organs"


class Cancelled(RuntimeError):
    """The user pressed Cancel; raised inside the worker to stop inference."""


def default_bundle() -> Path | None:
    """The shipped bundle ``bundles/m2f_ct_organs`` of the repository, if it is there."""
    from m2f_med.data import repo_root

    path = repo_root() / _DEFAULT_BUNDLE
    return path if (path / "configs").is_dir() else None


def image_volume(layer: Any):
    """The m2f-med volume ``(1, X, Y, Z)`` behind an image layer.

    Layers the plugin opened carry their source ``MetaTensor``; any other 3-D image layer is placed by its
    own scale/translate/affine (``_geometry`` convention: world = LPS ``(z, y, x)`` mm).

    Raises:
        ValueError: the layer is not a 3-D single-channel image.
    """
    from m2f_med.io.volume import SOURCE_FORMAT, make_volume
    from napari_m2f_med._geometry import geometry_from_layer_state

    info = layer_info(layer)
    if info is not None and info.volume is not None:
        return info.volume
    data = np.asarray(layer.data)
    if data.ndim != 3 or getattr(layer, "rgb", False):
        raise ValueError(f"layer {layer.name!r} is not a 3-D greyscale image (shape {data.shape})")
    geom = geometry_from_layer_state(layer.as_layer_data_tuple()[1], data.shape)
    source = np.ascontiguousarray(geom.from_display(data), dtype=np.float32)
    return make_volume(source[None], geom.source_affine, **{SOURCE_FORMAT: "napari"})


class _Signals(QObject):
    progress = Signal(int, int)


class SegmentWidget(QWidget):
    """Segment the selected image with a bundle; the mask arrives as a new Labels layer.

    Args:
        napari_viewer: the viewer (napari passes it).

    Attributes:
        worker: the running (or last) napari worker, ``None`` before the first run.
        running: True from :meth:`run` until the worker has finished (handled on the GUI thread).
        result_layer: the Labels layer of the last successful run.
        last_error: the exception of the last failed run (``None`` if it succeeded or was cancelled).
    """

    def __init__(self, napari_viewer: Any):
        super().__init__()
        self.viewer = napari_viewer
        self._shown = False
        watch_viewer(napari_viewer)
        self.worker: Any = None
        self.result_layer: Any = None
        self.last_error: BaseException | None = None
        self.running = False
        self._cancel = threading.Event()
        self._models: dict[tuple[str, str, str], Any] = {}
        self._signals = _Signals()
        self._signals.progress.connect(self._on_progress)

        self.image_combo = QComboBox()
        bundle = default_bundle()
        self.bundle_edit = QLineEdit(str(bundle) if bundle else "")
        self.bundle_edit.setPlaceholderText("bundle folder (configs/, models/)")
        self.checkpoint_edit = QLineEdit("")
        self.checkpoint_edit.setPlaceholderText("optional: other weights (.pt / .safetensors)")
        browse_bundle = QPushButton("…")
        browse_ckpt = QPushButton("…")
        browse_bundle.clicked.connect(self._browse_bundle)
        browse_ckpt.clicked.connect(self._browse_checkpoint)
        self.device_combo = QComboBox()
        self.device_combo.addItems(self._devices())
        self.context_label = QLabel("from the bundle")
        self.slab_spin = QSpinBox()
        self.slab_spin.setRange(1, 512)
        self.slab_spin.setValue(16)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(0, 256)
        self.batch_spin.setSpecialValueText("bundle default")
        self.batch_spin.setValue(0)
        self.tta_check = QCheckBox("flip test-time augmentation (3x slower)")
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        bundle_row = QHBoxLayout()
        bundle_row.addWidget(self.bundle_edit)
        bundle_row.addWidget(browse_bundle)
        ckpt_row = QHBoxLayout()
        ckpt_row.addWidget(self.checkpoint_edit)
        ckpt_row.addWidget(browse_ckpt)
        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Bundle", bundle_row)
        form.addRow("Checkpoint", ckpt_row)
        form.addRow("Device", self.device_combo)
        form.addRow("2.5D context slices", self.context_label)
        form.addRow("Slices per slab", self.slab_spin)
        form.addRow("Windows per batch", self.batch_spin)
        form.addRow(self.tta_check)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)  # keep the form compact when docked above the Review table

        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self._refresh_images()

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt override
        """On first show (the dock has just narrowed the canvas) fit the view to the image again."""
        super().showEvent(event)
        if not self._shown:
            self._shown = True
            reset_view_soon(self.viewer)
    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _devices() -> list[str]:
        import torch

        return ["cpu", "cuda", "auto"] if torch.cuda.is_available() else ["cpu"]

    def _browse_bundle(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Bundle folder", self.bundle_edit.text())
        if folder:
            self.bundle_edit.setText(folder)

    def _browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Checkpoint", "", "Weights (*.pt *.pth *.safetensors)")
        if path:
            self.checkpoint_edit.setText(path)

    def _refresh_images(self, _event: Any = None) -> None:
        current = self.image_combo.currentText()
        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image) and layer.ndim == 3]
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)

    def _load_model(self, bundle: str, checkpoint: str, device: str) -> Any:
        from m2f_med.inference.bundle_model import load_bundle, load_state_dict
        from m2f_med.io.errors import VolumeError

        key = (bundle, checkpoint, device)
        if key not in self._models:
            model = load_bundle(bundle, device)
            if checkpoint:
                try:
                    model.network.load_state_dict(load_state_dict(checkpoint), strict=True)
                except RuntimeError as err:
                    raise VolumeError(checkpoint, f"weights do not fit the bundle's network: {err}") from None
            self._models = {key: model}  # keep one model in memory
        return self._models[key]

    # ------------------------------------------------------------------ run
    def run(self, image_layer: Any = None) -> Any:
        """Start segmenting ``image_layer`` (default: the one chosen in the widget) in a worker thread.

        Args:
            image_layer: a 3-D image layer of the viewer.

        Returns:
            The started napari worker (``worker.finished`` fires when the run ends, however it ends).
        """
        from napari.qt.threading import create_worker

        layer = image_layer or (
            self.viewer.layers[self.image_combo.currentText()] if self.image_combo.currentText() else None
        )
        bundle = self.bundle_edit.text().strip()
        if layer is None or not bundle:
            self.status.setText("choose an image layer and a bundle folder")
            return None
        volume = image_volume(layer)
        options: dict[str, Any] = {
            "slab_size": self.slab_spin.value(),
            "flip_tta": self.tta_check.isChecked(),
        }
        if self.batch_spin.value():
            options["sw_batch_size"] = self.batch_spin.value()
        args = (volume, bundle, self.checkpoint_edit.text().strip(), self.device_combo.currentText(), options)

        self._cancel.clear()
        self.last_error = None
        self.running = True
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText("loading the model…")
        # connecting "errored" up front keeps napari from re-raising the error in the Qt event loop
        self.worker = create_worker(
            self._predict,
            *args,
            _connect={
                "returned": lambda result: self._on_result(layer, volume, result),
                "errored": self._on_error,
                "finished": self._on_finished,
            },
        )
        return self.worker

    def cancel(self) -> None:
        """Ask the running inference to stop (it stops at the next batch of windows)."""
        self._cancel.set()
        self.status.setText("cancelling…")

    def _check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("cancelled by the user")

    def _progress_or_cancel(self, done: int, total: int) -> None:
        self._signals.progress.emit(done, total)
        self._check()

    def _predict(self, volume: Any, bundle: str, checkpoint: str, device: str, options: dict[str, Any]):
        """Worker thread: load (or reuse) the model and segment the volume; ``None`` when cancelled."""
        from m2f_med.inference.volume import predict_volume

        try:
            model = self._load_model(bundle, checkpoint, device)
            self._check()
            mask, extras = predict_volume(volume, model, callback=self._progress_or_cancel, **options)
        except Cancelled:
            return None
        return model, mask, extras

    def _on_progress(self, done: int, total: int) -> None:
        if total:
            self.progress.setValue(int(round(100 * done / total)))
            self.status.setText(f"segmenting: {done} / {total} slices")

    def _on_result(self, image_layer: Any, volume: Any, result: tuple | None) -> None:
        if result is None:
            self.status.setText("cancelled")
            self.progress.setValue(0)
            return
        model, mask, extras = result
        ids = {name: i for i, name in model.labels.items()}
        confidence = {
            ids[n]: c for n, c in (extras.get("confidence") or {}).items() if c is not None and n in ids
        }
        bundle_name = (model.metadata or {}).get("name") or Path(str(model.bundle_dir or "model")).name
        data, kwargs, _ = labels_layer_data(
            mask,
            model.labels,
            reference=volume,
            confidence=confidence,
            name=f"{image_layer.name} labels",  # short: the model's name is in the SEG and the status line
            algorithm=str(bundle_name),
        )
        self.result_layer = self.viewer.add_labels(data, **kwargs)
        self.result_layer.preserve_labels = True  # painting one organ must not overwrite its neighbours
        self.context_label.setText(str(model.num_context_slices))
        found = sum(1 for v in (extras.get("voxels") or {}).values() if v)
        self.progress.setValue(100)
        self.status.setText(
            f"{bundle_name}: done in {extras.get('seconds', 0):.1f} s, {found} of {len(model.labels)} structures found"
        )

    def _on_error(self, err: BaseException) -> None:
        self.last_error = err
        self.status.setText(f"failed: {err}")

    def _on_finished(self) -> None:
        self.running = False
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
