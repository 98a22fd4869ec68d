"""m2f-med: Mask2Former for 3D medical imaging (CT and MRI)."""

__version__ = "0.1.0"
