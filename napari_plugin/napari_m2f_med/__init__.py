"""napari plugin for m2f-med: open studies, run Mask2Former models, review and edit masks."""
