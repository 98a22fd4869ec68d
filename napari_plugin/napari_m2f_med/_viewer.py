"""Viewer manners: consistent units on every layer, and a view that fits the image after loading or docking.

* Units. m2f-med layers are placed in patient millimetres (``_geometry.UNITS``). A layer napari or the user
  adds without units (a Points layer for measuring, a Shapes layer) has "pixel" units; napari then warns
  "Inconsistent units across layers; units will not be used for rendering." on every redraw. Such layers
  already live in the same world (mm), so :func:`watch_viewer` gives them millimetre units as they arrive.
* View. Docking a widget narrows the canvas but keeps the old zoom, so the patient is cropped; a newly
  opened image may lie outside the current view. :func:`reset_view_soon` fits the view once Qt has laid the
  window out again (napari's public ``viewer.reset_view``).
"""

from __future__ import annotations

import weakref
from typing import Any

from napari_m2f_med._geometry import UNITS
from napari_m2f_med._layers import layer_info

__all__ = ["watch_viewer", "reset_view_soon", "give_layer_units"]

_WATCHED: weakref.WeakSet = weakref.WeakSet()


def _current_viewer(viewer: Any = None) -> Any:
    if viewer is not None:
        return viewer
    try:
        import napari

        return napari.current_viewer()
    except Exception:  # noqa: BLE001 - no Qt application or no viewer
        return None


def give_layer_units(layer: Any) -> bool:
    """Give a layer without physical units (napari's "pixel") the millimetre units of m2f-med layers.

    Returns:
        True if the layer's units were changed.
    """
    units = getattr(layer, "units", None)
    if not units or any(str(u) not in ("pixel", "") for u in units):
        return False
    layer.units = (UNITS[0],) * len(units)
    return True


def reset_view_soon(viewer: Any = None) -> None:
    """Fit the view to the layers after Qt has processed pending layout changes (a dock, a new layer)."""
    viewer = _current_viewer(viewer)
    if viewer is None:
        return
    from qtpy.QtCore import QTimer

    ref = weakref.ref(viewer)

    def _reset() -> None:
        v = ref()
        if v is not None and len(v.layers):
            v.reset_view()

    QTimer.singleShot(0, _reset)


def watch_viewer(viewer: Any = None) -> Any:
    """Install the manners above on ``viewer`` (default: the current one) once; safe to call repeatedly.

    From then on: layers added without units get millimetres (when the viewer holds m2f-med layers), and
    the view is fitted after an m2f-med image layer is added.

    Returns:
        The viewer, or ``None`` when there is none.
    """
    viewer = _current_viewer(viewer)
    if viewer is None or viewer in _WATCHED:
        return viewer
    _WATCHED.add(viewer)
    ref = weakref.ref(viewer)

    def _on_inserted(event: Any) -> None:
        v = ref()
        layer = getattr(event, "value", None)
        if v is None or layer is None:
            return
        ours = [layer_info(other) is not None for other in v.layers]
        if any(ours):
            for other in v.layers:  # includes the new layer and any added before we watched
                give_layer_units(other)
        info = layer_info(layer)
        if info is not None and info.kind == "image":
            reset_view_soon(v)

    # first: napari's canvas draws (and checks units) inside its own "inserted" handler
    viewer.layers.events.inserted.connect(_on_inserted, position="first")
    for layer in list(viewer.layers):
        if any(layer_info(o) is not None for o in viewer.layers):
            give_layer_units(layer)
    return viewer
