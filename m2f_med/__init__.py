"""m2f-med: Mask2Former for 3D medical imaging (CT and MRI)."""

__version__ = "0.1.0"


def predict(inputs, output_dir, **options):
    """Batch segmentation; see :func:`m2f_med.inference.predict.predict` for the options and the report.

    Imported on first call so that ``import m2f_med`` stays light (no torch / MONAI until needed).
    """
    from m2f_med.inference.predict import predict as _predict

    return _predict(inputs, output_dir, **options)
