"""``import cifar``: each exported name belongs to one module and resolves; the lesson commands' modules."""

from __future__ import annotations

import importlib
from collections import Counter

import cifar


def test_every_exported_name_is_unique_and_resolves():
    counts = Counter(name for names in cifar._EXPORTS.values() for name in names)
    assert [name for name, count in counts.items() if count > 1] == []
    for module, names in cifar._EXPORTS.items():
        for name in names:
            assert getattr(cifar, name) is getattr(importlib.import_module(f"cifar.{module}"), name)


def test_libraries_hold_no_lesson():
    # python -m cifar.train / .boxes / .transfer run the lessons' command lines without the library importing them
    for library, lesson in (("train", "s10"), ("boxes", "raccoon"), ("transfer", "fish")):
        source = importlib.import_module(f"cifar.{library}").__loader__.get_source(f"cifar.{library}")
        head, _, main_block = source.partition('if __name__ == "__main__":')
        assert f"from .{lesson} import" not in head and f"from .{lesson} import main" in main_block
