"""``import cifar``: each exported name belongs to one module and resolves; each lesson module runs its command."""

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


def test_each_lesson_command_is_its_lesson_module():
    # python -m cifar.s10 / .raccoon / .fish / .residual: the lesson's module runs its own command line
    for lesson in ("s10", "raccoon", "fish", "residual"):
        module = importlib.import_module(f"cifar.{lesson}")
        source = module.__loader__.get_source(f"cifar.{lesson}")
        assert callable(module.main) and source.rstrip().endswith('if __name__ == "__main__":\n    main()')
    for library in ("train", "boxes", "transfer", "dataset", "download", "model", "bench"):
        source = importlib.import_module(f"cifar.{library}").__loader__.get_source(f"cifar.{library}")
        assert 'if __name__ == "__main__"' not in source or library == "bench"
