"""Downloads the course makes itself: pinned sources, checked files, clear errors offline.

Each data set the course fetches file by file is a :class:`Source`: a public repository at a
fixed commit, served by ``raw.githubusercontent.com``, and a manifest committed in
``cifar/manifests/`` with one ``<sha256>  <path in the repository>`` line per file.

* :data:`RACCOON`: datitran/raccoon_dataset, ``images/*.jpg`` and ``data/*.csv``;
* :data:`FISH_EGU2017`: kratzert/EGU2017_public, ``data/<species>/*.png``.

A repository path maps to the local copy by dropping a leading ``data/`` (``data/train_labels.csv``
-> ``train_labels.csv``, ``data/bream/x.png`` -> ``bream/x.png``), which gives the layout of the
offline copies in ``$CIFAR_DATA_DIR``. CIFAR-10 comes from torchvision instead (its own URL and md5
checks; see :func:`cifar.dataset.load_cifar10`); Kaggle's fish set from kagglehub
(:func:`download_kaggle_fish`).

:func:`download_file` writes ``<name>.part``, checks its SHA-256 and only then renames it, so an
interrupted or corrupted download is never taken for a finished file. Failures raise
:class:`~cifar.dataset.DataError` naming the URL or file and what to do.

``$CIFAR_DOWNLOAD_MIRROR`` (a URL prefix such as ``http://127.0.0.1:8000/``) replaces the scheme
and host of every download URL, keeping the path (:func:`mirror_url`): the files above, CIFAR-10's
archive and torchvision's ImageNet weights (:func:`cifar.model.torchvision_state_dict`); nothing
else changes. The tests serve files from a local server this way (``tests/test_download.py``, and
the simulated Colab run, ``tests/test_colab.py``).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .utils import DataError, file_sha256

MIRROR_ENV = "CIFAR_DOWNLOAD_MIRROR"
MANIFESTS = Path(__file__).resolve().parent / "manifests"
KAGGLE_FISH = "crowww/a-large-scale-fish-dataset"
KAGGLE_FISH_FOLDER = "Fish_Dataset"

BIG_FILE = 4 << 20  # files from this size get a byte progress bar
CHUNK = 1 << 16
TIMEOUT = 60  # seconds without an answer before a download fails
WORKERS = 8  # parallel downloads of a Source's many small files


@dataclass(frozen=True)
class Source:
    """A public GitHub repository at a fixed commit and the files of it the course uses."""

    name: str  # the folder in $CIFAR_DATA_DIR and in the cache dir
    repository: str  # owner/name
    commit: str
    manifest: str  # file in cifar/manifests: "<sha256>  <path in the repository>" lines

    @property
    def base_url(self) -> str:
        """URL of the repository's files at the pinned commit (ends with a slash)."""
        return f"https://raw.githubusercontent.com/{self.repository}/{self.commit}/"

    def files(self) -> list[tuple[str, str]]:
        """``(path in the repository, sha256)`` of every file, in manifest order."""
        return read_manifest(MANIFESTS / self.manifest)

    @staticmethod
    def local_path(path: str) -> str:
        """Where a repository file goes in the local copy: a leading ``data/`` dropped."""
        return path.removeprefix("data/")


RACCOON = Source("raccoon", "datitran/raccoon_dataset", "93938849301895fb73909842ba04af9b602f677a", "raccoon.sha256")
FISH_EGU2017 = Source(
    "fish_egu2017", "kratzert/EGU2017_public", "47bcb8714f4a8744176817ee3d90e8188d2b8480", "fish_egu2017.sha256"
)


def read_manifest(path: str | Path) -> list[tuple[str, str]]:
    """``(relative path, sha256)`` pairs of a ``sha256sum``-style file (``<sha256>  <path>`` lines)."""
    entries = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise ValueError(f"{path} line {number} is not '<sha256>  <path>': {line!r}")
        entries.append((name, digest))
    return entries


def mirror_url(url: str) -> str:
    """``url`` with its scheme and host replaced by ``$CIFAR_DOWNLOAD_MIRROR`` when that is set.

    ``https://raw.githubusercontent.com/owner/repo/commit/x.png`` with the mirror
    ``http://127.0.0.1:8000/`` becomes ``http://127.0.0.1:8000/owner/repo/commit/x.png``.
    """
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(url)
    rest = urllib.parse.urlunsplit(("", "", parts.path, parts.query, parts.fragment))
    return mirror.rstrip("/") + "/" + rest.lstrip("/")


def _how_to_fix(local_copy: str) -> str:
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    setting = f" (or the mirror {MIRROR_ENV}={mirror})" if mirror else ""
    return (
        f"Check the internet connection{setting} and run again, or set CIFAR_DATA_DIR to a folder "
        f"holding a local copy: {local_copy}."
    )


def download_file(url: str, dest: str | Path, sha256: str, progress: bool = True, local_copy: str = "the data") -> Path:
    """Download ``url`` to ``dest`` unless ``dest`` already holds the file with checksum ``sha256``.

    The bytes go to ``dest.part`` (any old one is overwritten, never resumed), are checked
    against ``sha256`` and then renamed to ``dest`` in one step. An unreachable server or an
    HTTP error, and a checksum mismatch, raise :class:`DataError` (naming the URL, or the file
    and both checksums, and ``local_copy`` as the offline alternative); the ``.part`` file is
    deleted. ``url`` goes through :func:`mirror_url`. Files from 4 MB get a progress bar.
    """
    dest = Path(dest)
    if dest.is_file() and file_sha256(dest) == sha256:
        return dest
    url = mirror_url(url)
    part = dest.with_suffix(dest.suffix + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    request = urllib.request.Request(url, headers={"User-Agent": "cifar-course"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=dest.name,
                leave=False,
                disable=not progress or total < BIG_FILE,
            )
            with bar:
                while block := response.read(CHUNK):
                    out.write(block)
                    digest.update(block)
                    size += len(block)
                    bar.update(len(block))
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        part.unlink(missing_ok=True)
        reason = f"HTTP {error.code} {error.reason}" if isinstance(error, urllib.error.HTTPError) else str(error)
        raise DataError(f"Cannot download {url} ({reason}). {_how_to_fix(local_copy)}") from error
    except BaseException:  # interrupted: no half-written file stays behind
        part.unlink(missing_ok=True)
        raise
    actual = digest.hexdigest()
    if actual != sha256:
        part.unlink(missing_ok=True)
        raise DataError(
            f"Checksum mismatch for {dest} downloaded from {url}: expected sha256 {sha256}, got {actual} "
            f"({size} bytes). The file was deleted. Run again (a download cut short gives this); if it "
            f"persists the server does not send the pinned file: set CIFAR_DATA_DIR to a folder holding a "
            f"local copy: {local_copy}."
        )
    os.replace(part, dest)
    return dest


def download_source(source: Source, dest: str | Path, progress: bool = True) -> Path:
    """Every file of ``source`` in ``dest`` (the local layout, see :meth:`Source.local_path`), checked.

    Files already there with the right checksum are kept; the others are downloaded
    (:func:`download_file`, several at a time) with one progress bar counting files.
    The first failure raises its :class:`DataError`. Returns ``dest``.
    """
    dest = Path(dest)
    entries = source.files()
    local_copy = f"{source.name}/ (the files of {source.repository} at commit {source.commit[:10]})"
    missing = [(p, d) for p, d in entries if not _verified(dest / source.local_path(p), d)]
    if not missing:
        return dest

    def fetch(path: str, digest: str) -> Path:
        url = source.base_url + urllib.parse.quote(path)
        return download_file(url, dest / source.local_path(path), digest, progress=False, local_copy=local_copy)

    with (
        tqdm(total=len(missing), unit="file", desc=f"downloading {source.name}", disable=not progress) as bar,
        ThreadPoolExecutor(WORKERS) as pool,
    ):
        futures = [pool.submit(fetch, path, digest) for path, digest in missing]
        try:
            for future in as_completed(futures):
                future.result()
                bar.update(1)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return dest


def _verified(path: Path, sha256: str) -> bool:
    return path.is_file() and file_sha256(path) == sha256


# ----------------------------------------------------------------------------- Kaggle's fish set (an option)


def kaggle_fish_root(folder: str | Path) -> Path:
    """The class-folder root in a download of Kaggle's "A Large Scale Fish Dataset": its ``Fish_Dataset/``.

    The download holds ``Fish_Dataset/`` (9 classes, ``<Class>/<Class>/*.png`` beside
    ``<Class>/<Class> GT/`` masks) and ``NA_Fish_Dataset/`` side by side; the lesson uses the
    first (:func:`cifar.dataset.scan_class_folders` steps into a nested ``Fish_Dataset/`` and
    skips the masks). ``folder`` may also be that ``Fish_Dataset/`` itself.
    """
    folder = Path(folder)
    if folder.name == KAGGLE_FISH_FOLDER and folder.is_dir():
        return folder
    if (folder / KAGGLE_FISH_FOLDER).is_dir():
        return folder / KAGGLE_FISH_FOLDER
    raise DataError(
        f"{folder} holds no {KAGGLE_FISH_FOLDER}/ folder; expected Kaggle's 'A Large Scale Fish Dataset' "
        f"({KAGGLE_FISH}) as downloaded: {KAGGLE_FISH_FOLDER}/ and NA_Fish_Dataset/ side by side."
    )


def download_kaggle_fish() -> Path:
    """Kaggle's "A Large Scale Fish Dataset" through kagglehub (Kaggle credentials needed); its download folder."""
    try:
        import kagglehub
    except ImportError as error:
        raise DataError(
            "Kaggle's fish set needs the kagglehub package: pip install kagglehub (and Kaggle credentials), "
            "or use the default source, the EGU2017 fish photos."
        ) from error
    try:
        return Path(kagglehub.dataset_download(KAGGLE_FISH))
    except Exception as error:  # no network, no credentials...
        raise DataError(
            f"kagglehub could not download {KAGGLE_FISH} ({error}). Check the internet connection and your Kaggle "
            "credentials, or pass the folder of a copy you downloaded."
        ) from error
