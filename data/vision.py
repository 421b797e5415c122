"""Read MNIST, CIFAR-10 and CIFAR-100 from their standard files, plus scikit-learn's `digits` (docs/data.md).

Every reader returns a `VisionData`: uint8 images in the dataset's native layout (MNIST and
digits [N, 28, 28]; CIFAR [N, 32, 32, 3], height-width-channel like torchvision's `.data`)
and int64 labels. The native layout matters: instance-dependent noise (docs/noise.md) is
computed from the raw pixels in exactly this layout.

Files are parsed here, not by torchvision; torchvision is used only to download.
- MNIST: `<data_path>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`, plain or `.gz`.
- CIFAR-10: `<data_path>/cifar-10-batches-py/data_batch_1..5` and `test_batch` (pickles).
- CIFAR-100: `<data_path>/cifar-100-python/train` and `test` (pickles, key `fine_labels`).
- digits: `sklearn.datasets.load_digits()` (1,797 real 8x8 scans, values 0..16, bundled with
  scikit-learn, no download). Pixels are scaled to 0..255, upscaled bilinearly (half-pixel
  centres, like PIL/torch) to 20x20 and zero-padded by 4 pixels on each side, so that, like
  MNIST's 20x20 digits in a 28x28 frame, LeNet applies unchanged. The split is fixed and
  independent of any seed: example i is a test example when i % 5 == 4 (1,438 train, 359 test).
"""

from __future__ import annotations

import gzip
import pickle
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.files import open_binary, refuse_directory
from utils.errors import DatasetError, UserError

MNIST_DIR = Path("MNIST") / "raw"
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_TRAIN_FILES = {"cifar10": tuple(f"data_batch_{i}" for i in range(1, 6)), "cifar100": ("train",)}
CIFAR_TEST_FILES = {"cifar10": ("test_batch",), "cifar100": ("test",)}
CIFAR_LABEL_KEYS = {"cifar10": "labels", "cifar100": "fine_labels"}
CIFAR_ROW = 3 * 32 * 32
# torchvision's on-disk layouts read here, and what their files are
FILE_KINDS = {"mnist": "an MNIST IDX file", "cifar10": "a CIFAR-10 batch (python pickle)",
              "cifar100": "a CIFAR-100 batch (python pickle)"}

IDX_UBYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"
# torchvision's download servers, probed before an automatic download
DOWNLOAD_HOSTS = {"mnist": "ossci-datasets.s3.amazonaws.com", "cifar10": "www.cs.toronto.edu",
                  "cifar100": "www.cs.toronto.edu"}
HOW_TO_FIX = "pass --download to fetch it, or --data_path to point at an existing copy"

DIGITS_TEST_EVERY = 5  # example i is a test example when i % 5 == 4
DIGITS_INNER, DIGITS_PAD = 20, 4


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on arrays is ambiguous
class VisionData:
    """One image-classification dataset held in memory as uint8 images and int64 labels."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int


# --------------------------------------------------------------------------- entry point


def load_files(key: str, data_path: str | Path, num_classes: int, download: bool = False,
               download_if_reachable: bool = True) -> VisionData:
    """Read the dataset whose files are in torchvision's layout `key` (mnist, cifar10, cifar100) under
    `data_path`. Missing files are fetched with torchvision when asked (`download`) or, by default,
    when the download server answers; otherwise one clear error."""
    if key not in FILE_KINDS:
        raise UserError(f"unknown file layout {key!r}; choose one of {', '.join(FILE_KINDS)}")
    root = Path(data_path)
    missing = missing_files(key, root)
    if missing:
        if not download and not (download_if_reachable and server_reachable(DOWNLOAD_HOSTS[key])):
            raise DatasetError(_missing_message(key, missing, "not found (and the download server "
                                                f"{DOWNLOAD_HOSTS[key]} is unreachable)"))
        download_dataset(key, root)
        missing = missing_files(key, root)
        if missing:
            raise DatasetError(_missing_message(key, missing, "still missing after the download"))
    return read_mnist(root, num_classes) if key == "mnist" else read_cifar(root, key, num_classes)


def expected_files(name: str, root: str | Path) -> list[Path]:
    """The files dataset `name` needs under `root` (MNIST files may also carry a `.gz` suffix)."""
    root = Path(root)
    if name == "mnist":
        return [root / MNIST_DIR / f for f in MNIST_FILES.values()]
    folder = root / CIFAR_DIRS[name]
    return [folder / f for f in CIFAR_TRAIN_FILES[name] + CIFAR_TEST_FILES[name]]


def missing_files(name: str, root: str | Path) -> list[Path]:
    """The expected files of dataset `name` that are absent under `root` (a directory in a file's place is an error)."""
    return [p for p in expected_files(name, root) if _existing_variant(p, FILE_KINDS[name]) is None]


def download_dataset(name: str, root: str | Path) -> None:
    """Fetch dataset `name` into `root` with torchvision; we only use it to download."""
    import torchvision.datasets as tvd  # imported lazily: only needed to download

    cls = {"mnist": tvd.MNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            cls(root=str(root), train=train, download=True)
    except Exception as err:  # network errors come in many types (URLError, RuntimeError, OSError)
        reason = " ".join(str(err).split())  # torchvision's messages span lines; ours are one line
        raise DatasetError(
            f"could not download {name} into {root} ({type(err).__name__}: {reason}); check the network "
            f"and pass --download again, or pass --data_path to point at an existing copy"
        ) from err


def server_reachable(host: str, timeout_s: float = 3.0) -> bool:
    """Whether `host` accepts an HTTPS connection: decides if missing files can be fetched."""
    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _missing_message(name: str, missing: list[Path], what: str) -> str:
    suffix = " (plain or .gz)" if name == "mnist" else ""
    listed = ", ".join(str(p) for p in missing)
    return f"{name} {what}: expected {listed}{suffix}; {HOW_TO_FIX}"


def _existing_variant(path: Path, expected: str) -> Path | None:
    """`path` itself if it exists, else its `.gz` sibling (MNIST ships gzipped), else None.

    A directory under either name, and no file, is refused: "not found" would send the user
    looking for a file that is, in a sense, there.
    """
    candidates = (path, path.with_name(path.name + ".gz"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    for candidate in candidates:
        refuse_directory(candidate, expected, HOW_TO_FIX)
    return None


# --------------------------------------------------------------------------- MNIST (IDX)


def read_idx(path: str | Path, expected_ndim: int | None = None) -> np.ndarray:
    """Parse one unsigned-byte IDX file (plain or gzipped) into a uint8 array of its dims."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DatasetError(f"{path}: only {len(raw)} bytes, too short for an IDX header; {HOW_TO_FIX}")
    magic = int.from_bytes(raw[:4], "big")
    ndim = raw[3]
    if raw[0] != 0 or raw[1] != 0 or raw[2] != IDX_UBYTE or (expected_ndim is not None and ndim != expected_ndim):
        want = f"0x{IDX_UBYTE << 8 | (expected_ndim or 0):08x}" if expected_ndim else "0x000008NN"
        raise DatasetError(
            f"{path}: bad IDX magic number 0x{magic:08x}, expected {want} "
            f"(unsigned bytes{f', {expected_ndim} dimensions' if expected_ndim else ''}); "
            f"the file is not an MNIST file of this kind; {HOW_TO_FIX}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(raw)} of {header} bytes); {HOW_TO_FIX}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DatasetError(
            f"{path}: {state}: header dims {dims} need {expected} bytes, file has {len(raw)}; {HOW_TO_FIX}"
        )
    # copy: frombuffer over bytes is read-only, and later code may want a writable array
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it starts with the gzip magic (whatever its suffix)."""
    try:
        with open_binary(path, FILE_KINDS["mnist"], HOW_TO_FIX) as handle:
            raw = handle.read()
        return gzip.decompress(raw) if raw[:2] == GZIP_MAGIC else raw
    except DatasetError:
        raise
    except FileNotFoundError as err:
        raise DatasetError(f"{path}: file not found; {HOW_TO_FIX}") from err
    except Exception as err:  # OSError, EOFError (truncated gzip), zlib.error (corrupt gzip), ...
        raise DatasetError(
            f"{path}: cannot read, the file may be truncated or corrupt "
            f"({type(err).__name__}: {err}); {HOW_TO_FIX}"
        ) from err


def read_mnist(root: str | Path, num_classes: int = 10) -> VisionData:
    """Read MNIST from the IDX files in `<root>/MNIST/raw/` (each plain or `.gz`)."""
    root = Path(root)
    paths = {}
    for key, filename in MNIST_FILES.items():
        found = _existing_variant(root / MNIST_DIR / filename, FILE_KINDS["mnist"])
        if found is None:
            raise DatasetError(_missing_message("mnist", [root / MNIST_DIR / filename], "not found"))
        paths[key] = found
    splits = {}
    for split in ("train", "test"):
        images = read_idx(paths[f"{split}_images"], expected_ndim=3)
        labels = read_idx(paths[f"{split}_labels"], expected_ndim=1)
        for path, array in ((paths[f"{split}_images"], images), (paths[f"{split}_labels"], labels)):
            _refuse_empty(path, len(array), f"the {split} split")
        _check_mnist_split(paths[f"{split}_images"], images, paths[f"{split}_labels"], labels, num_classes)
        splits[split] = (images, labels.astype(np.int64))
    return VisionData("mnist", *splits["train"], *splits["test"], num_classes=num_classes)


def _check_mnist_split(image_path: Path, images: np.ndarray, label_path: Path, labels: np.ndarray,
                       num_classes: int) -> None:
    if images.shape[1:] != (28, 28):
        raise DatasetError(f"{image_path}: images are {images.shape[1]}x{images.shape[2]}, MNIST's are 28x28")
    if len(images) != len(labels):
        raise DatasetError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels; "
            f"the two files must come from the same copy of MNIST"
        )
    _check_label_range(label_path, labels, num_classes)


# --------------------------------------------------------------------------- CIFAR (pickles)


def read_cifar(root: str | Path, name: str, num_classes: int) -> VisionData:
    """Read CIFAR-10 or CIFAR-100 (`name` "cifar10"/"cifar100") from its python pickles under `root`."""
    if name not in CIFAR_DIRS:
        raise UserError(f"read_cifar: unknown CIFAR name {name!r}; use 'cifar10' or 'cifar100'")
    folder = Path(root) / CIFAR_DIRS[name]
    train = [read_cifar_batch(folder / f, name, num_classes) for f in CIFAR_TRAIN_FILES[name]]
    test = [read_cifar_batch(folder / f, name, num_classes) for f in CIFAR_TEST_FILES[name]]
    return VisionData(
        name,
        np.concatenate([images for images, _ in train]),
        np.concatenate([labels for _, labels in train]),
        np.concatenate([images for images, _ in test]),
        np.concatenate([labels for _, labels in test]),
        num_classes=num_classes,
    )


def read_cifar_batch(path: Path, name: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR pickle as (uint8 images [n, 32, 32, 3], int64 labels [n])."""
    batch = _unpickle(path, name)
    label_key = CIFAR_LABEL_KEYS[name]
    absent = [k for k in ("data", label_key) if k not in batch]
    if absent:
        raise DatasetError(f"{path}: missing key(s) {absent} (found {sorted(batch)}); {HOW_TO_FIX}")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.size % CIFAR_ROW != 0:
        raise DatasetError(
            f"{path}: 'data' must be uint8 with a multiple of {CIFAR_ROW} values, "
            f"found {data.dtype} with {data.size} values; {HOW_TO_FIX}"
        )
    _refuse_empty(path, data.size // CIFAR_ROW, "a CIFAR batch")
    # rows are channel-first (R plane, G plane, B plane); HWC is torchvision's `.data` layout
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    labels = _as_label_vector(path, batch[label_key], label_key)
    if len(labels) != len(images):
        raise DatasetError(f"{path}: {len(images)} images but {len(labels)} '{label_key}'; {HOW_TO_FIX}")
    _check_label_range(path, labels, num_classes)
    return images, labels


def _unpickle(path: Path, name: str) -> dict:
    """Load a CIFAR pickle; keys come back as str whether they were pickled as bytes or str."""
    try:
        with open_binary(path, FILE_KINDS[name], HOW_TO_FIX) as handle:
            # latin1 decodes the Python 2 strings of the original files (as torchvision does)
            batch = pickle.load(handle, encoding="latin1")
    except DatasetError:
        raise
    except FileNotFoundError as err:
        raise DatasetError(f"{path}: file not found; {HOW_TO_FIX}") from err
    except Exception as err:  # truncation and corruption surface as many exception types
        raise DatasetError(
            f"{path}: not a readable CIFAR pickle, it may be truncated or corrupt "
            f"({type(err).__name__}: {err}); {HOW_TO_FIX}"
        ) from err
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: expected a pickled dict, found {type(batch).__name__}; {HOW_TO_FIX}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _as_label_vector(path: Path, values: object, key: str) -> np.ndarray:
    try:
        labels = np.asarray(values)
    except Exception as err:  # ragged or exotic objects
        raise DatasetError(f"{path}: '{key}' is not a list of integers ({err})") from err
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise DatasetError(f"{path}: '{key}' must be a flat list of integers, found {labels.dtype} {labels.shape}")
    return labels.astype(np.int64)


def _refuse_empty(path: Path, count: int, what: str) -> None:
    """A file that parses but holds no example: refused here, not met later as an IndexError."""
    if count == 0:
        raise DatasetError(f"{path}: holds 0 examples, but {what} needs at least one; the file is "
                           f"incomplete or not the real one; {HOW_TO_FIX}")


def _check_label_range(path: Path, labels: np.ndarray, num_classes: int) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(
            f"{path}: labels range over {labels.min()}..{labels.max()}, expected 0..{num_classes - 1}"
        )


# --------------------------------------------------------------------------- digits (bundled)


def load_digits_data(num_classes: int = 10) -> VisionData:
    """scikit-learn's 1,797 8x8 digits as 28x28 uint8 images, split by index (i % 5 == 4 is test)."""
    from sklearn.datasets import load_digits  # lazy: sklearn is slow to import and only needed here

    bunch = load_digits()
    images = upscale_digits(bunch.images)
    labels = bunch.target.astype(np.int64)
    is_test = np.arange(len(labels)) % DIGITS_TEST_EVERY == DIGITS_TEST_EVERY - 1
    return VisionData(
        "digits", images[~is_test], labels[~is_test], images[is_test], labels[is_test], num_classes
    )


def upscale_digits(images: np.ndarray) -> np.ndarray:
    """[N, 8, 8] values 0..16 → [N, 28, 28] uint8: bilinear to 20x20, zero border of 4 (MNIST's framing)."""
    size = images.shape[-1]
    weights = bilinear_matrix(size, DIGITS_INNER)
    scaled = images.astype(np.float64) * (255.0 / 16.0)
    inner = np.einsum("ij,njk,lk->nil", weights, scaled, weights)  # rows then columns, separably
    inner = np.clip(np.rint(inner), 0, 255).astype(np.uint8)
    pad = ((0, 0), (DIGITS_PAD, DIGITS_PAD), (DIGITS_PAD, DIGITS_PAD))
    return np.pad(inner, pad)


def bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in] 1-D linear interpolation weights with half-pixel centres, edges clamped."""
    centres = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
    centres = np.clip(centres, 0, size_in - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    frac = centres - low
    weights = np.zeros((size_out, size_in))
    np.add.at(weights, (np.arange(size_out), low), 1 - frac)
    np.add.at(weights, (np.arange(size_out), high), frac)
    return weights
