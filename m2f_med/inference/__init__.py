"""Volume inference: slab-wise 2.5D inferer (MONAI ``SliceInferer``), model space, post-processing, batch.

Entry points:

* :func:`predict_volume` — one volume in, a uint8 mask on its own grid out (napari plugin, scripts);
* :func:`predict` — the batch API behind ``m2f-med predict``;
* :func:`load_bundle` / :class:`BundleModel` — a MONAI bundle as a ready model (``docs/bundle_contract.md``);
* :class:`VolumeInferer` (memory-bounded, uint8 output) and :class:`SlicewiseInferer` (MONAI ``Inferer`` for
  bundle configs, float probabilities on the preprocessed grid).
"""

from m2f_med.inference.bundle_model import BundleModel, load_bundle, load_state_dict
from m2f_med.inference.inferer import VolumeInferer
from m2f_med.inference.postprocessing import postprocess_label

# Imported eagerly on purpose: a lazy wrapper named ``predict`` was replaced by the submodule of the same name
# the first time anything imported ``m2f_med.inference.predict``, so ``from m2f_med.inference import predict``
# returned a module depending on test order.
from m2f_med.inference.predict import predict
from m2f_med.inference.preprocessing import ModelSpace, intensity_transform, intensity_transformd
from m2f_med.inference.slicewise import SlicewiseInferer
from m2f_med.inference.volume import predict_volume

__all__ = [
    "BundleModel",
    "ModelSpace",
    "SlicewiseInferer",
    "VolumeInferer",
    "intensity_transform",
    "intensity_transformd",
    "load_bundle",
    "load_state_dict",
    "postprocess_label",
    "predict",
    "predict_volume",
]
