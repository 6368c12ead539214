"""cifar: the support package of the residual-networks course."""

__version__ = "0.1.0"

from .dataset import (
    CIFAR10_CLASSES,
    AlbumentationsDataset,
    DataError,
    load_cifar10,
    make_loader,
    mean_std,
    test_transforms,
    train_transforms,
)
from .model import ConvBlock, CustomResNet, ResidualBlock, Stage
from .scheduler import find_lr, lr_trace, make_optimizer, one_cycle
from .train import (
    FitResult,
    S10Config,
    evaluate,
    first_epoch_reaching,
    fit,
    predict,
    s10_data,
    s10_find_lr,
    s10_fit,
    s10_model,
    train_one_epoch,
)
from .utils import (
    autocast_dtype,
    count_parameters,
    data_dir,
    fast_mode,
    get_device,
    plot_history,
    plot_lrs,
    seed_everything,
)
