"""cifar: the support package of the residual-networks course.

Library: ``dataset`` (CIFAR-10 and class-folder data, transforms, splits), ``model``
(CustomResNet, ResNet-50 from scratch), ``train`` (the training engine: the textbook loop, resuming beside it,
evaluation, a resumable ``fit``), ``scheduler`` (optimizers, one-cycle, LR range test), ``boxes``
(bounding-box data, IoU metrics and losses), ``transfer`` (fine-tuning a ResNet-34 with a new
head), ``artifacts`` (atomic saves, run summaries, the weights format), ``utils`` (data location,
device, precision, seeding, plots, Grad-CAM), ``rf`` (receptive fields), ``bench`` (throughput),
``cli`` (the commands' shared options). Lessons: ``residual`` (plain and residual networks of the
paper's CIFAR-10 experiment, the degradation problem), ``s10`` (the S10 CustomResNet on CIFAR-10),
``raccoon`` (ResNet-50 bounding-box regression on the raccoon photos), ``fish`` (ResNet-34
transfer learning on the fish photos), ``residual`` (plain against residual networks); each runs
its own command (``python -m cifar.<lesson>``) and no library module imports one.

The names below are importable from ``cifar`` directly; each module is imported the first
time one of its names is used, so ``import cifar`` itself is cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS: dict[str, tuple[str, ...]] = {
    "dataset": (
        "AlbumentationsDataset",
        "BatchAugment",
        "CIFAR10_CLASSES",
        "DataError",
        "IMAGENET_MEAN",
        "IMAGENET_STD",
        "ImageFolderDataset",
        "class_counts",
        "cutout_fill",
        "imagenet_eval_transforms",
        "imagenet_train_transforms",
        "load_cifar10",
        "make_loader",
        "mean_std",
        "normalized_cutout_fill",
        "scan_class_folders",
        "shared_group_fraction",
        "split_indices",
        "split_leak",
        "test_transforms",
        "train_transforms",
    ),
    "model": (
        "BasicBlock",
        "Bottleneck",
        "CifarBlock",
        "CifarResNet",
        "ConvBlock",
        "CustomResNet",
        "RESNET50_PARAMETERS",
        "ResNet",
        "ResNet50",
        "ResidualBlock",
        "ShortcutA",
        "Stage",
        "count_weighted_layers",
        "imagenet_weights",
        "load_imagenet_into",
        "load_torchvision_resnet50",
        "torchvision_state_dict",
    ),
    "rf": ("empirical_receptive_field", "receptive_field_table"),
    "scheduler": ("find_lr", "lr_trace", "make_optimizer", "one_cycle", "range_test_figure"),
    "train": (
        "Checkpoint",
        "EpochTotals",
        "FitOptions",
        "FitResult",
        "ResumableBatches",
        "StepOptions",
        "WeightAverage",
        "accuracy_score",
        "evaluate",
        "first_epoch_reaching",
        "fit",
        "label_smoothing_floor",
        "predict",
        "run_seconds",
        "train_one_epoch",
    ),
    "boxes": (
        "BoxDataset",
        "box_iou_per_sample",
        "box_loss",
        "box_metrics",
        "box_model",
        "box_test_transforms",
        "box_train_transforms",
        "iou_score",
        "load_box_model",
        "mean_box_baseline",
        "measure_latency",
        "predict_boxes",
        "prediction_gallery",
        "read_box_csv",
        "save_box_model",
    ),
    "transfer": (
        "OneCycle",
        "fit_one_cycle",
        "freeze_backbone",
        "load_classifier",
        "parameter_groups",
        "resnet34_classifier",
        "resnet34_weights",
        "s10_backbone_weights",
        "s10_classifier",
        "save_classifier",
        "unfreeze",
    ),
    "s10": (
        "RECIPES",
        "S10Config",
        "Tricks",
        "describe_range_test",
        "evaluate_weights",
        "load_s10_weights",
        "recipe_table",
        "restore_run",
        "run_report",
        "run_results",
        "s10_config",
        "s10_data",
        "s10_find_lr",
        "s10_fit",
        "s10_max_lr",
        "s10_model",
        "s10_original_recipe",
        "s10_short_recipe",
        "s10_tricks_recipe",
        "save_s10_weights",
    ),
    "raccoon": ("RaccoonConfig", "raccoon_config", "raccoon_datasets", "raccoon_root", "train_raccoon"),
    "fish": (
        "FISH_GROUPS",
        "FISH_RECIPES",
        "FISH_SPLITS",
        "FishConfig",
        "compare_seeds",
        "fish_config",
        "fish_group",
        "fish_root",
        "run_seeds",
        "run_transfer",
        "seed_summary",
        "split_groups",
        "transfer_data",
        "video_group",
    ),
    "artifacts": ("load_model", "load_weights", "save_weights"),
    "utils": (
        "Gallery",
        "autocast_dtype",
        "confusion_matrix",
        "confused_pairs",
        "count_parameters",
        "data_dir",
        "denormalize",
        "describe_device",
        "fast_mode",
        "get_device",
        "grad_scaler",
        "gradcam_by_layer",
        "gradcam_maps",
        "gradcam_overlays",
        "map_similarity",
        "misclassified_gallery",
        "misclassified_indices",
        "needs_grad_scaler",
        "per_class_accuracy",
        "plot_confusion",
        "plot_history",
        "plot_lrs",
        "resolve_amp_dtype",
        "runs_dir",
        "seed_everything",
        "show_images",
        "show_source",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'cifar' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
