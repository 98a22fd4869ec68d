"""Screenshot of the reviewed sample for docs/napari.md: the sample CT, the shipped model's labels, Review.

Run under a virtual display (napari needs a GL context; ``QT_QPA_PLATFORM=offscreen`` has none):

    xvfb-run -a python docs/make_napari_screenshot.py docs/img/napari_review.png

It opens the sample DICOM series as a user would (*File > Open Sample > m2f-med*), runs the shipped bundle
``bundles/m2f_ct_organs`` with the Segment widget (about a minute of CPU), docks Segment and Review, clicks
the liver row (the slice through the liver, centred) and saves the whole window.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output PNG")
    parser.add_argument("--size", type=int, nargs=2, default=(1700, 1000), help="window width height (px)")
    parser.add_argument("--dock-width", type=int, default=640, help="width of the docked widgets (px)")
    args = parser.parse_args(argv)

    import napari
    from napari_m2f_med._review_widget import ReviewWidget
    from napari_m2f_med._segment_widget import SegmentWidget, default_bundle
    from qtpy.QtWidgets import QApplication
    from skimage.io import imsave

    def settle(seconds: float = 0.5) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.02)

    viewer = napari.Viewer(show=True)
    viewer.window.resize(*args.size)
    (image,) = viewer.open_sample("m2f-med", "example_ct_dicom")
    segment, review = SegmentWidget(viewer), ReviewWidget(viewer)
    docks = [
        viewer.window.add_dock_widget(segment, area="right", name="Segment"),
        viewer.window.add_dock_widget(review, area="right", name="Review"),
    ]
    from qtpy.QtCore import Qt

    main_window = docks[0].parentWidget()  # Qt's QMainWindow API: room for the whole Review table
    main_window.resizeDocks(docks, [args.dock_width] * 2, Qt.Orientation.Horizontal)
    bundle = default_bundle()
    if bundle is None:
        raise SystemExit("the shipped bundle bundles/m2f_ct_organs is missing")
    segment.bundle_edit.setText(str(bundle))
    segment.run(image)
    while segment.running:
        settle(0.2)
    if segment.result_layer is None:
        raise SystemExit(f"segmentation failed: {segment.last_error}")
    labels = segment.result_layer
    review.layer_combo.setCurrentText(labels.name)
    review.refresh()
    liver = next(r["label"] for r in review.rows if r["name"] == "liver")
    row = next(i for i, r in enumerate(review.rows) if r["label"] == liver)
    review.table.selectRow(row)
    review._on_cell_clicked(row, 2)
    labels.opacity = 0.6
    settle(0.5)
    main_window.resizeDocks(docks, [args.size[1] // 3, 2 * args.size[1] // 3], Qt.Orientation.Vertical)
    settle(1.0)
    shot = viewer.window.screenshot(flash=False, canvas_only=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    imsave(args.out, shot, check_contrast=False)
    print(f"wrote {args.out} ({shot.shape[1]}x{shot.shape[0]}); {segment.status.text()}")
    viewer.close()
    return args.out


if __name__ == "__main__":
    main()
