"""Per-case label remapping by structure name, for datalists that mix label sources.

A label file's ids mean different things per source (TotalSegmentator: 5 = liver; a manual spleen mask:
1 = spleen). Each datalist case carries ``label_names`` (``{source_id: name}``, see
:mod:`m2f_med.bundle.datalist`); this transform matches those names to the model's classes and applies
:class:`m2f_med.transforms.labels.RemapLabels`, so every label reaching the network uses the model ids
``1..K`` with 0 = background.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from m2f_med.bundle.datalist import LABEL_NAMES_KEY
from m2f_med.io.errors import VolumeError
from m2f_med.transforms.labels import RemapLabels

__all__ = ["RemapLabelsByNamed", "mapping_by_name"]


def mapping_by_name(source_names: Mapping[Any, str], target_labels: Mapping[Any, str]) -> dict[int, int]:
    """``{source_id: model_id}`` for every model class whose name the source also uses.

    Unlike :func:`m2f_med.transforms.labels.mapping_from_names`, a model class missing from the source is
    allowed (the case simply does not label it), so partially labelled cases can be used for validation.

    Args:
        source_names: ``{id: name}`` of the label file (keys int or numeric str).
        target_labels: ``{id: name}`` of the model, ids ``1..K``.

    Returns:
        The mapping; empty if no name is shared.
    """
    model_by_name = {str(name): int(i) for i, name in target_labels.items()}
    return {int(i): model_by_name[str(n)] for i, n in source_names.items() if str(n) in model_by_name}


class RemapLabelsByNamed(MapTransform):
    """Remap label ids to the model's ids using each case's ``label_names``; unnamed ids become 0.

    Args:
        keys: label keys, each a ``(1, X, Y, Z)`` label map (MetaTensor, tensor or array).
        labels: the model's classes, ``{model_id: name}``, e.g. ``{"1": "liver", "2": "spleen"}``
            (the bundle's ``labels`` entry).
        names_key: data key holding the case's ``{source_id: name}``; removed from the output so that
            cases with different names collate.
        default_names: names used when a case has none (``None``: such a case is an error).
        labelled_key: if set, the output gets this key: a ``(K,)`` float32 tensor, 1 for every model class
            the case names (labels), 0 for the others, for partial-label losses
            (:class:`m2f_med.bundle.PartialLabelBatch`). A class a case does not name is unknown there,
            not absent.
        allow_missing_keys: don't raise if a label key is missing (e.g. inference without labels).

    Raises (from ``__call__``):
        VolumeError: the case has no label names, or none of its names is one of the model's classes
            (the message names the label file).

    See Also:
        ``monai.transforms.MapLabelValued`` (keeps unlisted values; here they become background).
    """

    def __init__(
        self,
        keys: KeysCollection,
        labels: Mapping[Any, str],
        names_key: str = LABEL_NAMES_KEY,
        default_names: Mapping[Any, str] | None = None,
        labelled_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.labelled_key = labelled_key
        self.labels = {int(k): str(v) for k, v in labels.items()}
        self.names_key = names_key
        self.default_names = dict(default_names) if default_names is not None else None
        self._cache: dict[tuple, RemapLabels] = {}

    def _remapper(self, names: Mapping[Any, str], path: Any) -> RemapLabels:
        key = tuple(sorted((str(k), str(v)) for k, v in names.items()))
        if key not in self._cache:
            mapping = mapping_by_name(names, self.labels)
            if not mapping:
                raise VolumeError(
                    str(path) if path else None,
                    f"none of the model's classes {sorted(self.labels.values())} is named in this label's "
                    f"label_names {dict(names)}",
                )
            self._cache[key] = RemapLabels(mapping)
        return self._cache[key]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        names = d.pop(self.names_key, None) or self.default_names
        for key in self.key_iterator(d):
            label = d[key]
            path = getattr(label, "meta", {}).get("filename_or_obj") if hasattr(label, "meta") else None
            if not names:
                raise VolumeError(
                    str(path) if path else None,
                    f"no label names for this case: add '{self.names_key}' to its datalist entry or a "
                    "top-level 'labels' to the datalist",
                )
            d[key] = self._remapper(names, path)(label)
        if self.labelled_key is not None and names:
            named = set(mapping_by_name(names, self.labels).values())
            num = max(self.labels)
            d[self.labelled_key] = torch.tensor([float(i in named) for i in range(1, num + 1)])
        return d
