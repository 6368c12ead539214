"""Upstream's download hosts on 127.0.0.1, for tests/test_download.py and the simulated Colab run.

:class:`Mirror` is a static HTTP server on 127.0.0.1 (a free port, started and stopped by the
test) answering the URL paths that ``CIFAR_DOWNLOAD_MIRROR`` keeps of upstream's URLs: from
``routes`` (URL path -> local file) first, else from the files under ``root`` laid out like those
paths. It records the path of every GET in ``requests`` (torchvision's dataset download asks
twice: a probe for redirects, whose body it does not read, then the download).

What it can serve:

* the raccoon and fish repositories' files at their pinned commits (:func:`source_routes`): the
  offline copies in ``$CIFAR_DATA_DIR``, byte-identical to upstream, under upstream's paths;
* CIFAR-10 in torchvision's format (:func:`cifar_archive`): ``cifar-10-batches-py/`` with five
  training batches, ``test_batch`` and ``batches.meta``, built from arrays (our copy is JPEG, so
  the pixels are not the real archive's);
* stand-ins for torchvision's ImageNet weights (:func:`weights_stand_in`): the architecture's
  ``state_dict`` at a seeded random initialisation, under upstream's file name.

The built files cannot have upstream's checksums. :func:`use_stand_in_checksums` is the one place
where the pinned checksums that name upstream's bytes are replaced by the stand-ins' own:
torchvision's md5s of the CIFAR-10 archive and its members (class attributes of ``CIFAR10``), and
the hash prefix that ``torch.hub`` reads from a weights file's name (``resnet50-11ad3fa6.pth``).
URLs, downloads, the checks themselves, extraction and loading stay the learner's code.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import pickle
import sys
import tarfile
import threading
import urllib.parse
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from cifar.dataset import CIFAR10_CLASSES


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    mirror: Mirror

    def handle_error(self, request, client_address):
        # a client that closes the connection early (torchvision's redirect probe reads no body): not an error
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def translate_path(self, path):
        route = self.server.mirror.routes.get(_url_path(path))
        return str(route) if route is not None else super().translate_path(path)

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.mirror.requests.append(_url_path(self.path))
        super().do_GET()

    def log_message(self, *args):
        pass


def _url_path(path: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(path).path)


class Mirror:
    """A static HTTP server on 127.0.0.1; use it as a context manager (started on enter, stopped on exit).

    ``url`` is its base URL (the value for ``CIFAR_DOWNLOAD_MIRROR``), ``requests`` the URL paths
    of the GETs it answered, unquoted (``/~kriz/cifar-10-python.tar.gz``), in order.
    """

    def __init__(self, root: str | Path, routes: dict[str, Path] | None = None):
        self.root = Path(root)
        self.routes = dict(routes or {})
        self.requests: list[str] = []
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def __enter__(self) -> Mirror:
        self._httpd = _Server(("127.0.0.1", 0), partial(_Handler, directory=str(self.root)))
        self._httpd.mirror = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def url_path(url: str) -> str:
    """The part of an upstream URL that the mirror answers: its path (``/~kriz/cifar-10-python.tar.gz``)."""
    return urllib.parse.urlsplit(url).path


def source_routes(source, offline: Path) -> dict[str, Path]:
    """URL path -> offline file for every file of a :class:`cifar.download.Source` (its manifest's paths)."""
    base = url_path(source.base_url)
    return {base + path: Path(offline) / source.local_path(path) for path, _ in source.files()}


# ----------------------------------------------------------------------------- CIFAR-10 in torchvision's format


def cifar_archive(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                  compresslevel: int = 9) -> tuple[bytes, dict[str, bytes]]:  # fmt: skip
    """A ``cifar-10-python.tar.gz`` in torchvision's format and its members' bytes.

    ``cifar-10-batches-py/`` holds ``data_batch_1`` ... ``data_batch_5`` (the training images
    split in five), ``test_batch`` and ``batches.meta``: pickled dicts with ``data`` (N x 3072
    uint8 rows, 1024 red then green then blue values), ``labels``, ``batch_label`` and
    ``filenames``, and ``label_names``. ``train`` and ``test`` are (N, 32, 32, 3) uint8 images and
    their labels. ``compresslevel`` 0 stores the members uncompressed (still a gzip file).
    """

    def batch(images: np.ndarray, labels: np.ndarray, name: str) -> bytes:
        data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
        return _pickle({"batch_label": name, "labels": labels.tolist(), "data": data, "filenames": []})

    members = {f"data_batch_{i + 1}": batch(x, y, f"training batch {i + 1} of 5")
               for i, (x, y) in enumerate(zip(np.array_split(train[0], 5), np.array_split(train[1], 5)))}  # fmt: skip
    members["test_batch"] = batch(*test, "testing batch 1 of 1")
    members["batches.meta"] = _pickle({"label_names": list(CIFAR10_CLASSES), "num_vis": 3072})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=compresslevel) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), members


def _pickle(entry: dict) -> bytes:
    # protocol 4 keeps the pixels as raw bytes (a 30.7 MB training batch, like the real archive's);
    # protocol 2 from Python 3 would store them latin-1 encoded, half again as large
    return pickle.dumps(entry, protocol=4)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def cifar_md5s(tarball: bytes, members: dict[str, bytes]) -> dict:
    """torchvision's ``CIFAR10`` checksum attributes for this archive (for :func:`use_stand_in_checksums`)."""
    return {
        "tgz_md5": md5(tarball),
        "train_list": [[f"data_batch_{i}", md5(members[f"data_batch_{i}"])] for i in range(1, 6)],
        "test_list": [["test_batch", md5(members["test_batch"])]],
        "meta": {"filename": "batches.meta", "key": "label_names", "md5": md5(members["batches.meta"])},
    }


# ----------------------------------------------------------------------------- ImageNet weights


def weights_stand_in(weights, build: Callable, folder: Path, seed: int = 0) -> tuple[str, Path]:
    """``(URL path, file)`` of a stand-in for torchvision ``weights`` (e.g. ``ResNet50_Weights.IMAGENET1K_V2``).

    ``build`` (e.g. ``torchvision.models.resnet50``) at a seeded random initialisation: the right
    keys and shapes, no ImageNet knowledge. Saved with ``torch.save`` under upstream's file name in ``folder``.
    """
    import torch

    path = url_path(weights.url)
    file = Path(folder) / path.rsplit("/", 1)[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.save(build(weights=None).state_dict(), file)
    return path, file


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- the one override


def use_stand_in_checksums(cifar: dict | None = None, weights: dict[str, str] | None = None,
                           set_attribute: Callable = setattr) -> None:  # fmt: skip
    """Make torchvision and torch.hub check the served stand-ins against their own checksums.

    ``cifar``: :func:`cifar_md5s` of the served archive, set on ``torchvision.datasets.CIFAR10``.
    ``weights``: URL path of a weights file -> the stand-in's sha256. torch.hub takes the expected
    hash from the file name (``resnet50-11ad3fa6.pth``: its sha256 starts with ``11ad3fa6``); for
    these files its download now expects the stand-in's whole sha256 instead. Everything else,
    and every other file, is checked as before. ``set_attribute``: pytest's ``monkeypatch.setattr``
    in a test process (undone after the test); the builtin ``setattr`` in a notebook kernel.
    """
    if cifar:
        from torchvision.datasets import CIFAR10

        for name, value in cifar.items():
            set_attribute(CIFAR10, name, value)
    if weights:
        import torch.hub

        by_prefix = {
            torch.hub.HASH_REGEX.search(path.rsplit("/", 1)[-1]).group(1): sha for path, sha in weights.items()
        }
        download = torch.hub.download_url_to_file

        def download_url_to_file(url, dst, hash_prefix=None, progress=True):
            return download(url, dst, by_prefix.get(hash_prefix, hash_prefix), progress=progress)

        set_attribute(torch.hub, "download_url_to_file", download_url_to_file)
