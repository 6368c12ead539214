"""cifar: the support package of the residual-networks course.

Modules: ``dataset`` (CIFAR-10 and class-folder data, transforms, splits), ``model``
(CustomResNet, ResNet-50 from scratch), ``train`` (training engine, S10 recipe), ``scheduler``
(optimizers, one-cycle, LR range test), ``utils`` (device, seeding, plots, Grad-CAM), ``rf``
(receptive fields), ``boxes`` (bounding-box regression), ``transfer`` (ResNet-34 transfer learning).
"""

import warnings

__version__ = "0.1.0"

# `python -m cifar.train` (and .boxes, .rf, .transfer) imports the package first, which already
# imports those modules; runpy then warns that the module is in sys.modules. It is harmless here.
warnings.filterwarnings("ignore", message=r"'cifar\.\w+' found in sys.modules", category=RuntimeWarning)

from .dataset import (
    CIFAR10_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    AlbumentationsDataset,
    DataError,
    ImageFolderDataset,
    fish_group,
    imagenet_eval_transforms,
    imagenet_train_transforms,
    load_cifar10,
    make_loader,
    mean_std,
    scan_class_folders,
    shared_group_fraction,
    split_indices,
    test_transforms,
    train_transforms,
    video_group,
)
from .model import (
    RESNET50_PARAMETERS,
    BasicBlock,
    Bottleneck,
    ConvBlock,
    CustomResNet,
    ResidualBlock,
    ResNet,
    ResNet50,
    Stage,
    count_weighted_layers,
    load_imagenet_into,
    load_torchvision_resnet50,
)
from .rf import empirical_receptive_field, receptive_field_table
from .scheduler import find_lr, lr_trace, make_optimizer, one_cycle
from .train import (
    FitResult,
    S10Config,
    accuracy_score,
    evaluate,
    evaluate_weights,
    first_epoch_reaching,
    fit,
    load_s10_weights,
    predict,
    restore_run,
    s10_config,
    s10_data,
    s10_fast_recipe,
    s10_find_lr,
    s10_fit,
    s10_max_lr,
    s10_model,
    s10_original_recipe,
    train_one_epoch,
)
from .utils import (
    autocast_dtype,
    confusion_matrix,
    count_parameters,
    data_dir,
    denormalize,
    fast_mode,
    get_device,
    grad_scaler,
    gradcam_overlays,
    misclassified_indices,
    needs_grad_scaler,
    per_class_accuracy,
    plot_confusion,
    plot_history,
    plot_lrs,
    resolve_amp_dtype,
    seed_everything,
    show_images,
)
