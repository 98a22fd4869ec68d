"""Under torchrun the console logs (MONAI ``StatsHandler``: train loss, ``val_*`` metrics) come from rank 0
only: every ``StatsHandler`` of the training and evaluation configs is disabled where ``main_process`` is
false (multi_gpu_*.yaml set it to ``rank == 0``). MONAI's StatsHandler logs to its own logger, so lowering
the engines' log level on the other ranks did not silence it."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _stats_handlers(parser, path: str) -> list[str]:
    items = parser.get(path) or []
    return [f"{path}#{i}" for i, item in enumerate(items)
            if isinstance(item, dict) and item.get("_target_") == "StatsHandler"]


@pytest.mark.parametrize("bundle,files", [
    ("m2f_ct_organs", ["train.yaml"]),
    ("m2f_ct_organs", ["train.yaml", "evaluate.yaml"]),
    ("m2f_ct_lesions", ["train.yaml"]),
])
def test_stats_handlers_log_on_the_main_process_only(bundle, files):
    from monai.bundle import ConfigParser
    from monai.handlers import StatsHandler

    configs = [str(REPO / "bundles" / bundle / "configs" / f) for f in files]
    ids = []
    for main in (True, False):
        parser = ConfigParser()
        parser.read_config(configs)
        parser["main_process"] = main
        ids = _stats_handlers(parser, "train#handlers") + _stats_handlers(parser, "validate#handlers")
        assert ids
        built = [parser.get_parsed_content(i) for i in ids]
        if main:
            assert all(isinstance(h, StatsHandler) for h in built), ids
        else:
            assert all(h is None for h in built), ids
