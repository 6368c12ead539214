"""The misclassified-images gallery with Grad-CAM, on a tiny classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from cifar import dataset as cd
from cifar.utils import (
    Gallery,
    confused_pairs,
    gradcam_by_layer,
    gradcam_maps,
    map_similarity,
    misclassified_gallery,
    misclassified_indices,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
CLASSES = ("cat", "dog", "fox")


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, len(CLASSES))

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


@pytest.fixture
def scored():
    """Ten 16x16 images, the tiny model's logits and labels with 5 mistakes (samples 1, 3, 5, 7, 9)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    torch.manual_seed(0)
    model = TinyNet().to(memory_format=torch.channels_last)
    dataset = cd.AlbumentationsDataset(images, np.zeros(10, dtype=np.int64), cd.test_transforms(MEAN, STD))
    with torch.no_grad():
        outputs = model(torch.stack([dataset[i][0] for i in range(10)]))
    predicted = outputs.argmax(1)
    targets = torch.where(torch.arange(10) % 2 == 1, (predicted + 1) % 3, predicted)
    return model, dataset, outputs, targets


def _shown(figure: Figure) -> list[str]:
    return [ax.get_title() for ax in figure.axes if ax.images]


def test_images_then_their_gradcam(scored):
    model, dataset, outputs, targets = scored
    figure = misclassified_gallery(model, dataset, outputs, targets, CLASSES, MEAN, STD, Gallery(model.features, n=4))
    assert isinstance(figure, Figure) and len(figure.axes) == 8 and figure._suptitle.get_text().endswith("Grad-CAM")
    predicted = outputs.argmax(1)
    expected = [f"{CLASSES[targets[i]]} → {CLASSES[predicted[i]]}" for i in misclassified_indices(outputs, targets, 4)]
    assert _shown(figure) == expected + expected  # the 4 most confident mistakes, then their Grad-CAM
    assert next(model.parameters()).dtype == torch.float32 and not model.training


def test_rows_of_images_each_above_their_gradcam(scored):
    model, dataset, outputs, targets = scored
    gallery = Gallery(model.features, n=10, ncols=3)
    figure = misclassified_gallery(model, dataset, outputs, targets, CLASSES, MEAN, STD, gallery)
    assert len(figure.axes) == 12  # 5 mistakes: images 3 + Grad-CAM 3, then images 2 + Grad-CAM 2 and 2 empty
    titles = [ax.get_title() if ax.images else None for ax in figure.axes]
    assert titles[:3] == titles[3:6] and titles[6:8] == titles[9:11] and titles[8] is titles[11] is None


def test_images_or_gradcam_alone(scored):
    model, dataset, outputs, targets = scored
    images = misclassified_gallery(model, dataset, outputs, targets, CLASSES, MEAN, STD, Gallery(n=5, show="images"))
    gallery = Gallery(model.features, n=5, show="gradcam", title="Grad-CAM (features)")
    cams = misclassified_gallery(model, dataset, outputs, targets, CLASSES, MEAN, STD, gallery)
    assert len(_shown(images)) == len(_shown(cams)) == 5 and _shown(images) == _shown(cams)
    assert cams._suptitle.get_text() == "Grad-CAM (features)"
    with pytest.raises(ValueError, match="layer"):
        misclassified_gallery(model, dataset, outputs, targets, CLASSES, MEAN, STD, Gallery(show="gradcam"))
    with pytest.raises(ValueError, match="nothing to show"):
        misclassified_gallery(model, dataset, outputs, outputs.argmax(1), CLASSES, MEAN, STD, Gallery(show="images"))


def test_gradcam_maps_and_how_alike_they_are(scored):
    model, dataset, outputs, targets = scored
    inputs = torch.stack([dataset[i][0] for i in range(6)])
    maps = gradcam_maps(model, inputs, outputs.argmax(1)[:6].tolist(), model.features)
    assert maps.shape == (6, 16, 16) and maps.min() >= 0 and maps.max() <= 1
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    same = np.stack([maps[0]] * 4)
    np.testing.assert_allclose(map_similarity(same), 1.0)
    assert np.isnan(map_similarity(np.zeros((2, 4, 4)))).all()  # no spread: nothing to correlate
    figure = gradcam_by_layer(model, inputs[:3], [0, 1, 2], {"features": model.features}, MEAN, STD, ["a", "b", "c"])
    assert [ax.get_title() for ax in figure.axes if ax.images] == ["a", "b", "c", "features", "", ""]


def test_confused_pairs_add_both_directions():
    matrix = np.array([[50, 7, 1], [3, 40, 0], [2, 5, 30]])  # [true, predicted]
    table = confused_pairs(matrix, CLASSES, n=2)
    assert table.index.tolist() == ["cat / dog", "dog / fox"]
    assert table.loc["cat / dog"].tolist() == [7, 3, 10, 55.6]  # 10 of the 18 errors
    assert table.loc["dog / fox", "errors"] == 5
