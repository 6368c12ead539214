"""Bounding-box regression: CSV checks, boxes that follow the pixels, metrics, save/reload; the raccoon lesson's fast
real run and command line."""

from __future__ import annotations

import copy
import json
import math

import albumentations as A
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from torchvision.ops import box_iou

from cifar import raccoon as lesson
from cifar.boxes import (
    BoxDataset,
    CenterSizeBoxes,
    HeadOptions,
    ScaledLoss,
    SpatialBoxHead,
    box_iou_per_sample,
    box_loss,
    box_metrics,
    box_model,
    box_test_transforms,
    box_train_transforms,
    count_multi_box_images,
    flip_boxes,
    iou_by_bn_mode,
    iou_score,
    load_box_model,
    mean_box_baseline,
    measure_latency,
    normalize_box,
    original_accuracy,
    overfit_batch,
    plot_augmented_boxes,
    plot_box_history,
    predict_boxes,
    prediction_gallery,
    read_box_csv,
    save_box_model,
    train_box_head,
)
from cifar.dataset import DataError
from cifar.model import ResNet50
from cifar.raccoon import raccoon_config, train_raccoon
from cifar.utils import data_dir

HEADER = "filename,width,height,class,xmin,ymin,xmax,ymax"


def _image(path, width=80, height=60, mode="RGB"):
    rng = np.random.default_rng(0)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def _csv(folder, rows, header=HEADER, name="boxes.csv"):
    path = folder / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture
def photos(tmp_path):
    """a.jpg 80x60 RGB, b.png 80x60 greyscale."""
    _image(tmp_path / "a.jpg")
    _image(tmp_path / "b.png", mode="L")
    return tmp_path


def test_reads_corner_form_and_converts_greyscale_to_rgb(photos):
    path = _csv(photos, ["a.jpg,80,60,raccoon,10,5,50,45", "b.png,80,60,raccoon,0,0,80,60"])
    dataset = BoxDataset(path)
    assert len(dataset) == 2 and dataset.multi_box_images == 0
    image, target = dataset[1]  # greyscale file, no transform: uint8 CHW at the original size
    assert image.shape == (3, 60, 80) and image.dtype == torch.uint8
    torch.testing.assert_close(target, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(dataset[0][1], torch.tensor([10 / 80, 5 / 60, 50 / 80, 45 / 60]))


def test_original_xyhw_format_gives_the_same_boxes(photos):
    corners = read_box_csv(_csv(photos, ["a.jpg,80,60,raccoon,10,5,50,45"]))
    xyhw = read_box_csv(_csv(photos, ["a.jpg,10,5,40,40"], "filename,x,y,height,width", "xyhw.csv"), box_format="xyhw")
    cols = ["xmin", "ymin", "xmax", "ymax"]
    assert corners[cols].to_numpy().tolist() == xyhw[cols].to_numpy().tolist() == [[10, 5, 50, 45]]
    tall = read_box_csv(_csv(photos, ["a.jpg,10,5,30,20"], "filename,x,y,height,width", "t.csv"), box_format="xyhw")
    assert tall[cols].to_numpy().tolist() == [[10, 5, 30, 35]]  # height 30 runs down the rows (y)


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ("a.jpg,80,60,raccoon,ten,5,50,45", ["'xmin'", "'ten'", "not a number"]),
        ("a.jpg,80,60,raccoon,10,,50,45", ["'ymin'", "not a number"]),
        ("a.jpg,80,60,raccoon,-3,5,50,45", ["'xmin'", "negative"]),
        ("a.jpg,80,60,raccoon,10,5,90,45", ["outside the 80x60 image"]),
        ("a.jpg,80,60,raccoon,10,5,50,61", ["outside the 80x60 image"]),
        ("a.jpg,80,60,raccoon,50,5,10,45", ["empty box"]),
        ("a.jpg,100,60,raccoon,10,5,50,45", ["CSV says the image is 100x60", "80x60"]),
        ("missing.jpg,80,60,raccoon,10,5,50,45", ["missing.jpg", "not found"]),
    ],
)
def test_bad_rows_raise_naming_row_and_file(photos, row, words):
    path = _csv(photos, ["b.png,80,60,raccoon,0,0,80,60", row])
    with pytest.raises(DataError) as caught:
        BoxDataset(path)
    message = str(caught.value)
    assert "boxes.csv row 2 (line 3)" in message
    assert ("'missing.jpg'" if "missing" in row else "'a.jpg'") in message
    for word in words:
        assert word in message


def test_missing_column_names_the_file_and_columns(photos):
    path = _csv(photos, ["a.jpg,80,60,raccoon,10,5,50"], header="filename,width,height,class,xmin,ymin,xmax")
    with pytest.raises(DataError, match=r"boxes\.csv: missing column\(s\) ymax; found filename"):
        read_box_csv(path)


def test_unreadable_image_is_named(photos):
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"row 1 \(line 2\), image 'broken.jpg': Cannot read image .*broken\.jpg"):
        read_box_csv(_csv(photos, ["broken.jpg,80,60,raccoon,1,1,5,5"]))


def test_truncated_jpeg_is_caught_when_the_csv_is_read(photos):
    # its header is intact (size 200x150 readable), the pixels stop half-way: only a full decode notices
    _image(photos / "cut.jpg", width=200, height=150)
    data = (photos / "cut.jpg").read_bytes()
    (photos / "cut.jpg").write_bytes(data[: len(data) // 2])
    path = _csv(photos, ["a.jpg,80,60,raccoon,10,5,50,45", "cut.jpg,200,150,raccoon,10,5,50,45"])
    for read in (read_box_csv, BoxDataset):
        with pytest.raises(DataError, match=r"row 2 \(line 3\), image 'cut.jpg': Cannot read image .*cut\.jpg"):
            read(path)


def test_several_boxes_keep_the_largest(photos):
    rows = ["a.jpg,80,60,raccoon,0,0,10,10", "b.png,80,60,raccoon,0,0,5,5", "a.jpg,80,60,raccoon,20,20,60,50",
            "a.jpg,80,60,raccoon,1,1,3,3"]  # fmt: skip
    path = _csv(photos, rows)
    dataset = BoxDataset(path)
    assert dataset.records.filename.tolist() == ["a.jpg", "b.png"]  # order of first appearance
    assert dataset.box(0).tolist() == [20, 20, 60, 50] and dataset.records.loc[0, "row"] == 3
    assert dataset.records.boxes.tolist() == [3, 1]
    assert dataset.multi_box_images == 1 == count_multi_box_images(path)
    assert read_box_csv(path, multi_box="first").loc[0, "xmax"] == 10
    with pytest.raises(DataError, match="3 boxes on one image"):
        read_box_csv(path, multi_box="error")
    assert len(BoxDataset(path, max_images=1)) == 1


def test_horizontal_flip_moves_the_box_with_the_pixels(photos):
    path = _csv(photos, ["a.jpg,80,60,raccoon,10,5,50,45"])
    flip = A.Compose([A.HorizontalFlip(p=1)], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]))
    plain, flipped = BoxDataset(path), BoxDataset(path, transform=flip)
    image, target = flipped[0]
    assert image.shape == (60, 80, 3)  # no ToTensorV2: numpy HWC; the target still uses the right size
    torch.testing.assert_close(target, torch.tensor([(80 - 50) / 80, 5 / 60, (80 - 10) / 80, 45 / 60]))
    np.testing.assert_array_equal(image, plain[0][0].permute(1, 2, 0).numpy()[:, ::-1])


def test_lesson_transforms_give_normalized_tensors_and_boxes(photos):
    path = _csv(photos, ["a.jpg,80,60,raccoon,10,5,50,45", "b.png,80,60,raccoon,60,40,80,60"])
    train = BoxDataset(path, transform=box_train_transforms(64))
    train.transform.set_random_seed(0)
    for _ in range(10):
        for index in range(2):
            image, target = train[index]
            assert image.shape == (3, 64, 64) and image.dtype == torch.float32
            assert ((target >= 0) & (target <= 1)).all() and (target[:2] < target[2:]).all()
    image, target = BoxDataset(path, transform=box_test_transforms(64))[0]
    torch.testing.assert_close(target, torch.tensor([10 / 80, 5 / 60, 50 / 80, 45 / 60]))  # resize keeps fractions
    assert abs(float(image.mean())) < 3


def test_normalize_box():
    torch.testing.assert_close(normalize_box([65, 41.7, 650, 417], 650, 417), torch.tensor([0.1, 0.1, 1.0, 1.0]))


def test_iou_on_known_boxes():
    true = torch.tensor([[0.0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 2, 2]])
    pred = torch.tensor([[0.0, 0, 2, 2], [1, 0, 3, 2], [5, 5, 6, 6], [0, 0, 2, 2], [2, 2, 0, 0]])
    expected = torch.tensor([1.0, 1 / 3, 0.0, 0.25, 1.0])  # same, half shifted, disjoint, inside, corners swapped
    torch.testing.assert_close(box_iou_per_sample(pred, true), expected)
    torch.testing.assert_close(iou_score(pred, true), expected)  # a fraction, as in the metrics and figures
    metrics = box_metrics(pred, true)
    assert metrics["images"] == 5 and metrics["share_iou_50"] == pytest.approx(0.4)
    assert math.isclose(metrics["mean_iou"], float(expected.mean()), rel_tol=1e-6)


def test_iou_equals_the_diagonal_of_torchvisions_box_iou():
    xy = torch.rand(16, 2, 2)
    boxes = torch.cat([xy.min(1).values, xy.max(1).values], 1)
    other = boxes.roll(1, 0) * 0.9 + 0.05
    torch.testing.assert_close(box_iou_per_sample(boxes, other), box_iou(boxes, other).diagonal())


def test_original_accuracy_contrast_on_known_numbers():
    true = torch.tensor([[10.0, 20, 30, 40]])
    predicted = torch.tensor([[11.0, 18, 30, 44]])  # relative errors 10%, 10%, 0, 10%
    assert original_accuracy(predicted, true) == pytest.approx(92.5)
    # same scale, other unit (e.g. both normalized): the same value, relative errors have no unit
    assert original_accuracy(predicted / 100, true / 100) == pytest.approx(92.5)
    # a zero coordinate has no relative error: skipped (2/20 and 0, 0 on the other three)
    zero = original_accuracy(torch.tensor([[5.0, 22, 30, 40]]), torch.tensor([[0.0, 20, 30, 40]]))
    assert zero == pytest.approx(100 - 100 * (0.1 / 3))
    # far from the truth, it is unbounded below
    assert original_accuracy(true * 5, true) == pytest.approx(-300)
    box = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    metrics = box_metrics(box, box, torch.tensor([[100.0, 50]]))
    assert metrics["original_accuracy_contrast"] == 100 and metrics["mean_abs_error_px"] == 0


def test_box_losses():
    boxes = torch.tensor([[0.1, 0.2, 0.6, 0.7]])
    for name in ("mse", "smoothl1", "giou"):
        assert float(box_loss(name)(boxes, boxes)) == pytest.approx(0, abs=1e-6)
    inverted = torch.tensor([[0.6, 0.7, 0.1, 0.2]])  # GIoU sorts corners: the same box
    assert float(box_loss("giou")(inverted, boxes)) == pytest.approx(0, abs=1e-6)
    assert float(box_loss("mse")(boxes + 0.1, boxes)) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="loss must be one of"):
        box_loss("l3")


def test_save_and_reload_give_the_predictions_of_the_fp16_weights(tmp_path):
    torch.manual_seed(0)
    model = ResNet50(num_classes=4, sigmoid=True).eval()
    path = save_box_model(model, tmp_path / "w" / "box.pt", image_size=64)
    state = torch.load(path, weights_only=True)  # a state dict in fp16, not a pickled model
    assert state["fc.weight"].dtype == torch.float16
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["sigmoid"] is True and record["num_classes"] == 4 and record["image_size"] == 64
    reloaded, loaded_record = load_box_model(path)
    assert loaded_record == record and not reloaded.training and reloaded.sigmoid
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), copy.deepcopy(model).half().float()(x), rtol=0, atol=0)
        torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=2e-3)  # fp16 rounding of the weights
    linear = ResNet50(num_classes=4, sigmoid=False)
    assert not load_box_model(save_box_model(linear, tmp_path / "linear.pt"))[0].sigmoid


def test_load_box_model_refuses_other_weights(tmp_path):
    from cifar.artifacts import save_weights

    path = save_weights(torch.nn.Linear(2, 2), tmp_path / "other.pt", {"architecture": "Linear"})
    with pytest.raises(ValueError, match="not a ResNet50"):
        load_box_model(path)
    with pytest.raises(FileNotFoundError):
        load_box_model(tmp_path / "absent.pt")


def test_latency_dict_and_mode_restored():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    model.train()
    result = measure_latency(model, image_size=16, batch_sizes=(1, 4), warmup=1, repeats=3)
    assert model.training and result["device"].startswith("CPU") and result["repeats"] == 3
    assert result["batch_1_ms_per_image"] > 0 and result["batch_4_images_per_s"] > 0
    assert math.isclose(result["batch_4_ms_per_image"], result["batch_4_ms_per_batch"] / 4)


def test_figures(photos):
    path = _csv(photos, ["a.jpg,80,60,raccoon,10,5,50,45", "b.png,80,60,raccoon,60,40,80,60"])
    figure = plot_augmented_boxes(BoxDataset(path, transform=box_train_transforms(32)), [0, 1], versions=2)
    assert isinstance(figure, Figure) and len([ax for ax in figure.axes if ax.images]) == 4
    model = ResNet50(num_classes=4, sigmoid=True)
    figure = prediction_gallery(model, BoxDataset(path, transform=box_test_transforms(32)))
    assert isinstance(figure, Figure) and "IoU" in figure.axes[0].get_title()
    assert figure.get_suptitle().endswith("over all 2 photos")


def test_gallery_title_tells_the_shown_photos_from_the_whole_set(photos):
    path = _csv(photos, ["a.jpg,80,60,raccoon,10,5,50,45", "b.png,80,60,raccoon,60,40,80,60"])
    dataset = BoxDataset(path, transform=box_test_transforms(32))
    predicted = torch.tensor([[10 / 80, 5 / 60, 50 / 80, 45 / 60], [0.0, 0.0, 0.1, 0.1]])  # IoU 1 and 0
    model = ResNet50(num_classes=4, sigmoid=True)
    figure = prediction_gallery(model, dataset, indices=[0], predicted=predicted)
    assert figure.get_suptitle().endswith("mean IoU 1.000 over these 1 photos, 0.500 over all 2")
    assert figure.axes[0].get_title() == "a.jpg\nIoU 1.00"
    with pytest.raises(ValueError, match="1 boxes for a dataset of 2"):
        prediction_gallery(model, dataset, predicted=predicted[:1])


def test_box_figures_draw_thumbnails(photos):
    _image(photos / "big.jpg", width=400, height=300)
    path = _csv(photos, ["big.jpg,400,300,raccoon,40,30,360,270"])
    model = ResNet50(num_classes=4, sigmoid=True)
    dataset = BoxDataset(path, transform=box_test_transforms(32))
    for thumbnail, shape in ((112, (84, 112, 3)), (None, (300, 400, 3))):
        figure = prediction_gallery(model, dataset, thumbnail=thumbnail)
        assert figure.axes[0].images[0].get_array().shape == shape
    figure = plot_augmented_boxes(BoxDataset(path, transform=box_train_transforms(200)), [0], versions=1, thumbnail=50)
    assert figure.axes[0].images[0].get_array().shape == (50, 50, 3)


def test_box_history_plot_shows_iou_as_a_fraction_without_a_target_line():
    history = [{"epoch": e, "train_loss": 0.1, "test_loss": 0.1, "train_iou": 0.4, "test_iou": 0.5} for e in (1, 2)]
    _, ax = plot_box_history(history).axes
    assert ax.get_title() == "Mean IoU" and "fraction" in ax.get_ylabel()
    assert len(ax.lines) == 2  # train and test; no dotted target
    assert max(max(line.get_ydata()) for line in ax.lines) <= 1


# ----------------------------------------------------------------------------- real raccoon data


@pytest.fixture
def raccoon():
    folder = data_dir("raccoon")
    if folder is None or not (folder / "train_labels.csv").is_file():
        pytest.skip("raccoon data absent: set CIFAR_DATA_DIR to a folder holding raccoon/train_labels.csv")
    return folder


def test_raccoon_csvs(raccoon):
    assert count_multi_box_images(raccoon / "raccoon_labels.csv") == 16
    train = BoxDataset(raccoon / "train_labels.csv", raccoon / "images")
    test = BoxDataset(raccoon / "test_labels.csv", raccoon / "images")
    assert (len(train), len(test), train.multi_box_images, test.multi_box_images) == (160, 40, 12, 4)
    assert not set(train.records.filename) & set(test.records.filename)


def test_greyscale_raccoon_photos_load_as_rgb(raccoon):
    records = read_box_csv(raccoon / "raccoon_labels.csv", raccoon / "images")
    grey = []
    for index, path in enumerate(records.path):
        with Image.open(path) as image:
            if image.mode == "L":
                grey.append(index)
    assert len(grey) == 3  # raccoon-150, -152 and -161.jpg are single-channel JPEGs
    dataset = BoxDataset(raccoon / "raccoon_labels.csv", raccoon / "images", cache_images=False)
    for index in grey:
        image = dataset.load_image(index)
        assert image.dtype == np.uint8 and image.shape == (records.height[index], records.width[index], 3)
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_fast_training_run_on_real_photos(raccoon, tmp_path):
    config = raccoon_config(fast=True, amp=False)
    assert (config.train_images, config.image_size, config.epochs) == (4, 64, 1)
    lines = []
    run = train_raccoon(config, tmp_path / "run", progress=False, log=lines.append)
    assert len(run.train_set) == len(run.test_set) == 4
    assert {"train_iou", "test_iou", "train_loss", "test_loss"} <= set(run.history[0])
    assert run.predicted.shape == run.true.shape == (4, 4)
    assert 0 <= run.metrics["mean_iou"] <= 1 and "original_accuracy_contrast" in run.metrics
    assert math.isclose(run.history[-1]["test_iou"], run.metrics["mean_iou"], rel_tol=1e-4, abs_tol=1e-5)
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    again = train_raccoon(config, tmp_path / "run", progress=False, log=lines.append)  # resumes: nothing to do
    assert any(line.startswith("Resumed") for line in lines)
    torch.testing.assert_close(again.predicted, run.predicted)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    del state["config"]["iou"]  # as written when the history held IoU in %: refused, not resumed
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(ValueError, match="different configuration"):
        train_raccoon(config, tmp_path / "run", progress=False, log=lines.append)


def test_cli_fast(raccoon, tmp_path, monkeypatch):
    monkeypatch.setattr(lesson, "train_raccoon", _stub_run(raccoon))
    summary = lesson.main(["--fast", "--image-size", "32", "--out", str(tmp_path / "cli"), "--latency-repeats", "1"])
    for name in ("raccoon_resnet50.pt", "raccoon_resnet50.json", "curves.png", "gallery.png", "summary.json"):
        assert (tmp_path / "cli" / name).is_file()
    assert summary["config"]["epochs"] == 1 and summary["latency"]["image_size"] == 32
    assert summary["command"].startswith("python -m cifar.raccoon --fast --image-size 32 --out ")
    model, record = load_box_model(tmp_path / "cli" / "raccoon_resnet50.pt")
    assert record["config"] == summary["config"] and model.sigmoid


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {"epochs": 30, "image_size": 224, "train_images": None, "amp": True}),
        (["--fast"], {"epochs": 1, "image_size": 64, "train_images": 4, "batch_size": 2}),
        (["--fast", "--epochs", "3"], {"epochs": 3, "image_size": 64, "train_images": 4}),
        (["--fast", "--epochs", "30", "--batch-size", "16"], {"epochs": 30, "batch_size": 16, "image_size": 64}),
        (["--linear-head", "--pretrained", "--loss", "giou", "--precision", "fp32"],
         {"sigmoid": False, "pretrained": True, "loss": "giou", "amp": False, "epochs": 30}),
    ],
)  # fmt: skip
def test_cli_flags_override_the_fast_recipe(argv, expected):
    config = lesson.config_from_args(lesson.parse_args(argv))
    assert {name: getattr(config, name) for name in expected} == expected


def test_cli_missing_data_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: .*train_labels\.csv not found"):
        lesson.main(["--fast", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")])


def _stub_run(root):
    """train_raccoon without the training (the fast run is tested above): keeps the CLI test short."""

    def run(config, out, data_root, device, **kwargs):
        train_set, test_set = lesson.raccoon_datasets(config, root)
        model, status = box_model()
        predicted, true = predict_boxes(model, test_set, device)
        history = [{"epoch": 1, "train_loss": 0.1, "test_loss": 0.1, "train_iou": 1.0, "test_iou": 1.0}]
        return lesson.RaccoonRun(model, history, box_metrics(predicted, true), status, train_set, test_set, predicted,
                                  true)  # fmt: skip

    return run


def test_mean_box_baseline(photos):
    csv = photos / "boxes.csv"
    csv.write_text("filename,xmin,ymin,xmax,ymax\na.jpg,0,0,40,30\nb.png,40,30,80,60\n")
    both = BoxDataset(csv, photos)
    metrics = mean_box_baseline(both, both)
    # the mean box (20, 15)-(60, 45) overlaps each true box on 20x15 pixels: IoU 300 / (1200 + 1200 - 300)
    assert metrics["mean_iou"] == pytest.approx(300 / 2100, abs=1e-6)
    assert metrics["share_iou_50"] == 0.0


def test_iou_reads_a_prediction_as_the_box_spanned_by_its_corners():
    true = torch.tensor([[0.1, 0.2, 0.5, 0.6]])
    swapped = torch.tensor([[0.5, 0.6, 0.1, 0.2]])
    assert box_iou_per_sample(swapped, true).item() == pytest.approx(1.0)
    assert box_loss("giou")(swapped, true).item() == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------- the box lesson's diagnosis and head


class _TinyBoxNet(torch.nn.Module):
    """A few thousand weights with batch norm: enough to fit a handful of 16 px images."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Flatten(),
            torch.nn.Linear(8 * 16 * 16, 4),
        )  # fmt: skip

    def forward(self, x):
        return torch.sigmoid(self.layers(x))


def test_overfit_batch_fits_a_handful_of_images():
    torch.manual_seed(0)
    images, targets = torch.randn(4, 3, 16, 16), torch.tensor([[0.1, 0.2, 0.6, 0.7], [0.3, 0.1, 0.9, 0.5]] * 2)
    rows = overfit_batch(_TinyBoxNet(), images, targets, steps=150, lr=1e-3, every=50)
    assert [row["step"] for row in rows] == [50, 100, 150]
    assert rows[-1]["loss"] < 1e-3 and rows[-1]["train_mode_iou"] > 0.9, rows[-1]
    assert 0 <= rows[-1]["eval_mode_iou"] <= 1


def test_iou_by_bn_mode_leaves_the_running_statistics_and_the_mode_alone():
    dataset = torch.utils.data.TensorDataset(torch.randn(6, 3, 16, 16), torch.tensor([[0.1, 0.1, 0.8, 0.9]] * 6))
    model = _TinyBoxNet().train()
    norm = model.layers[1]
    before = norm.running_mean.clone(), norm.running_var.clone()
    result = iou_by_bn_mode(model, dataset, batch_size=3)
    assert set(result) == {"train_mode_iou", "eval_mode_iou"}
    assert torch.equal(norm.running_mean, before[0]) and torch.equal(norm.running_var, before[1])
    assert model.training and norm.momentum == 0.1


def test_flip_boxes_mirrors_x_and_is_its_own_inverse():
    box = torch.tensor([[0.1, 0.2, 0.4, 0.9]])
    assert torch.allclose(flip_boxes(box), torch.tensor([[0.6, 0.2, 0.9, 0.9]]))
    assert torch.allclose(flip_boxes(flip_boxes(box)), box)


def test_center_size_boxes_turn_centre_and_size_into_corners():
    model = CenterSizeBoxes(torch.nn.Identity())
    assert torch.allclose(model(torch.tensor([[0.5, 0.5, 0.2, 0.4]])), torch.tensor([[0.4, 0.3, 0.6, 0.7]]))


def test_scaled_loss_scales_the_loss():
    outputs, targets = torch.zeros(2, 4), torch.ones(2, 4)
    assert ScaledLoss(torch.nn.MSELoss(), 100.0)(outputs, targets).item() == pytest.approx(100.0)


def test_spatial_box_head_keeps_position_and_trains_to_beat_a_constant():
    # the box sits where the feature map lights up: a head that reads position must learn it; a constant cannot
    torch.manual_seed(0)
    n, features, targets = 64, torch.zeros(64, 2, 8, 8), []
    for i in range(n):
        x = i % 4
        features[i, 0, :, 2 * x : 2 * x + 2] = 1.0
        targets.append([x / 4, 0.2, x / 4 + 0.25, 0.8])
    targets = torch.tensor(targets)
    head = train_box_head(features, targets, HeadOptions(steps=300, lr=1e-2, dropout=0.0, seed=1))
    assert isinstance(head, SpatialBoxHead) and not head.training
    with torch.no_grad():
        iou = box_iou_per_sample(head(features), targets).mean()
    constant = box_iou_per_sample(targets.mean(0).expand_as(targets), targets).mean()
    assert iou > 0.8 > constant, (iou, constant)
    again = train_box_head(features, targets, HeadOptions(steps=300, lr=1e-2, dropout=0.0, seed=1))
    assert torch.equal(again(features), head(features))  # seeded


def test_plot_box_history_draws_the_baseline_on_an_axis_from_0():
    history = [{"epoch": e, "train_loss": 1.0, "test_loss": 1.0, "train_iou": 0.5, "test_iou": 0.5} for e in (1, 2)]
    ax = plot_box_history(history, baseline=0.575).axes[1]
    assert ax.get_ylim() == (0.0, 1.0)
    assert any("0.575" in line.get_label() for line in ax.get_lines())


def test_diagnosis_table_gives_mean_and_spread_per_change():
    def run(name, seed, iou):
        return {
            "name": name, "seed": seed, "config": {"loss_scale": 1.0}, "history": [{"train_loss": 0.02}],
            "metrics": {"mean_iou": iou, "share_iou_50": 0.5},
            "train_fit": {"eval_mode_iou": iou, "train_mode_iou": iou},
        }  # fmt: skip

    table = lesson.diagnosis_table([run("short recipe", 0, 0.5), run("short recipe", 1, 0.6), run("no aug", 0, 0.7)])
    assert list(table.index) == ["short recipe", "no aug"]
    assert table.loc["short recipe", "seeds"] == 2
    assert table.loc["short recipe", "test IoU"] == pytest.approx(0.55)
    assert table.loc["short recipe", "test IoU spread"] == pytest.approx(0.1)


def test_compare_with_mean_box_counts_the_seeds_above_it():
    import pandas as pd

    table = pd.DataFrame({"mean_iou": [0.6, 0.7, 0.5], "share_iou_50": [0.8, 0.9, 0.7]})
    summary = lesson.compare_with_mean_box(table, {"mean_iou": 0.55, "share_iou_50": 0.75})
    assert summary.loc["mean_iou", "seeds above the mean box"] == 2
    assert summary.loc["mean_iou", "mean"] == pytest.approx(0.6)


def test_committed_raccoon_records_are_complete():
    for name in ("resnet50_224", "overfit", "diagnosis"):
        record = lesson.load_record(name)
        assert record["command"] and record["device"], name
    full = lesson.load_record("resnet50_224")
    assert len(full["history"]) == full["config"]["epochs"] == 30
    assert full["metrics"]["mean_iou"] == 0.570 and full["mean_box"]["mean_iou"] == 0.575
    diagnosis = lesson.load_record("diagnosis")
    assert {run["name"] for run in diagnosis["runs"]} == set(lesson.DIAGNOSIS)


def test_train_box_head_does_not_depend_on_the_callers_random_state():
    features, targets = torch.randn(16, 4, 4, 4), torch.rand(16, 4).sort(-1).values
    first = train_box_head(features, targets, HeadOptions(steps=5, seed=3))
    torch.rand(100)  # the caller draws in between
    second = train_box_head(features, targets, HeadOptions(steps=5, seed=3))
    assert torch.equal(first(features), second(features))
