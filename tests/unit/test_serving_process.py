"""What a serving process sets up for itself (`service.server`) besides the app."""

from __future__ import annotations

import gc

from service.server import YOUNG_COLLECTION_EVERY, collect_less_often


def test_a_serving_process_collects_its_youngest_objects_less_often_and_the_others_as_before() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # Python's defaults
        collect_less_often()
        assert gc.get_threshold() == (YOUNG_COLLECTION_EVERY, 10, 10)
        assert YOUNG_COLLECTION_EVERY >= 10 * 700
    finally:
        gc.set_threshold(*saved)
