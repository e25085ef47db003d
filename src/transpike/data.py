"""Dataset specs for the command line: where calibration and evaluation images come from.

    digits[:train|:test]             sklearn's digits (built in; the default data)
    npz:PATH                         arrays x (N,C,H,W or N,H,W) and y (N,; left out: no labels); uint8
                                     x is divided by 255, float x is fed as stored
    imagefolder:PATH                 an ImageNet-style folder tree (one folder per class)
    images:PATH                      every image file under PATH, in sorted order, without labels (for
                                     calibration, a trace, or an evaluation scored against the ANN)
    cifar10:PATH[:train|:test]       CIFAR-10, python version, already on disk (PATH/cifar-10-batches-py)
    cifar100:PATH[:train|:test]      CIFAR-100, python version, already on disk (PATH/cifar-100-python)
    filelist:FILE[:ROOT]             images a list file names, one per line with its class, paths from
                                     ROOT or the file's folder (ImageNet's flat validation folder and a
                                     val.txt, Tiny-ImageNet's val_annotations.txt)

Image folders, lists and CIFAR are preprocessed with the model's timm data config (resize, crop,
normalization), as timm's own validation does, or with the preset of the torchvision weights the
model was trained as (``Swin_T_Weights.IMAGENET1K_V1``: bicubic, 232 then 224), or for a transformers
model read from a directory that holds a ``preprocessor_config.json``, with its image processor
(which that file configures; nothing in it is executed). Nothing is ever
downloaded. CIFAR's python version is a pickle; it is read with an unpickler that can only build
numpy arrays and plain containers, so a tampered file cannot run code.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from .digits import load_digits_split

KINDS = ("digits", "npz", "imagefolder", "images", "cifar10", "cifar100", "filelist")
UNLABELLED = -1  # the label of a sample whose class is not known (images:PATH)
SPEC_HELP = (
    "digits[:train|:test], npz:PATH, imagefolder:PATH, images:PATH, "
    "cifar10:PATH[:train|:test], cifar100:PATH[:train|:test], filelist:FILE[:ROOT]"
)


def parse_spec(spec: str, default_split: str) -> tuple[str, str, str]:
    """(kind, path, split) of a data spec; ValueError naming the spec if it is malformed."""
    kind, _, rest = spec.partition(":")
    if kind not in KINDS:
        raise ValueError(f"unknown data spec {spec!r}; expected one of: {SPEC_HELP}")
    split = default_split
    if kind in ("digits", "cifar10", "cifar100"):
        head, _, tail = rest.rpartition(":")
        if tail in ("train", "test"):
            rest, split = head, tail
    if kind == "digits":
        if rest:
            raise ValueError(f"bad data spec {spec!r}: digits takes only a split, digits[:train|:test]")
        return kind, "", split
    if not rest:
        raise ValueError(f"bad data spec {spec!r}: {kind} needs a path, {kind}:PATH")
    if kind == "filelist":
        list_and_root(spec, rest)
    elif not Path(rest).exists():
        raise ValueError(f"data spec {spec!r}: {rest} does not exist")
    return kind, rest, split


def _npz(path: str) -> TensorDataset:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            names = arrays.files
            x = arrays["x"] if "x" in names else None
            y = arrays["y"] if "y" in names else None
    except (OSError, ValueError) as error:
        raise ValueError(f"npz data {path}: cannot be read as .npz without pickle ({error})") from None
    if x is None:
        found = ", ".join(map(repr, names)) or "none"
        raise ValueError(
            f"npz data {path}: needs an array 'x' (images; 'y', labels, if known), found {found}"
        )
    if y is None:  # images without labels
        y = np.full(len(x), UNLABELLED)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(
            f"npz data {path}: need x of shape (N,C,H,W) or (N,H,W) and y of shape (N,), "
            f"got {x.shape} and {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"npz data {path}: labels y must be integers, got {y.dtype}")
    images = torch.from_numpy(x)
    images = images.float() / 255.0 if x.dtype == np.uint8 else images.float()
    return TensorDataset(images, torch.from_numpy(y).long())


def _input_size(model: nn.Module) -> tuple[int, int] | None:
    """The one image size ``model`` accepts, where it has one: a timm model's ``img_size`` (MaxViT,
    CoAtNet) or its patch embedding's, torchvision's ViT's ``image_size``, a transformers model's
    configuration's, torchvision's MaxViT's (4× the grid of its first stage, after the stem's and
    the first layer's strides of 2)."""
    from torchvision.models import MaxVit

    if isinstance(model, MaxVit):
        return tuple(4 * side for side in model.blocks[0].grid_size)
    embed, config = getattr(model, "patch_embed", None), getattr(model, "config", None)
    owners = ((model, "image_size"), (model, "img_size"), (embed, "img_size"), (config, "image_size"))
    for owner, name in owners:
        size = getattr(owner, name, None)
        if size is not None:
            return (size, size) if isinstance(size, int) else tuple(size)
    return None


def _timm_transform(model: nn.Module | None, spec: str):
    if model is None:
        raise ValueError(f"data spec {spec!r}: preprocessing needs the model's data config")
    import timm.data

    # The pretrained config keeps the default resolution even when the model was built with another
    # img_size; the model itself knows the size it accepts (a torchvision model has no pretrained
    # config, and timm's defaults, ImageNet's mean and std and a crop of 0.875, are torchvision's
    # preset but for the interpolation).
    size = _input_size(model)
    overrides = {"input_size": (getattr(model, "in_chans", 3), *size)} if size else {}
    if not hasattr(model, "pretrained_cfg"):  # torchvision's classification preset: bilinear
        overrides["interpolation"] = "bilinear"
    config = timm.data.resolve_data_config(overrides, model=model)
    return timm.data.create_transform(**config, is_training=False)


class _ImageProcessor:
    """A transformers image processor as a transform: one PIL image to one image tensor.

    SigLIP 2's NaFlex processor keeps each image's aspect ratio and returns a padded sequence of
    patches; a batch of one-size images is what the SNN simulates, so it is given the image's
    central square (resized to the largest square grid its ``max_num_patches`` allows) and its
    patches are put back together into that image."""

    def __init__(self, processor) -> None:
        self.processor = processor

    def __call__(self, image) -> torch.Tensor:
        if not hasattr(self.processor, "max_num_patches"):
            return self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        from .rules.hf_vit import image_from_patches

        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        out = self.processor(images=image.crop((left, top, left + side, top + side)), return_tensors="pt")
        grid = tuple(out["spatial_shapes"][0].tolist())
        return image_from_patches(out["pixel_values"][0], grid, self.processor.patch_size)


def _hf_processor(model: nn.Module | None) -> _ImageProcessor | None:
    """The image processor of a transformers model read from a directory with a
    ``preprocessor_config.json`` (its ``config._name_or_path``, kept in a saved network's spec);
    None for any other model."""
    directory = Path(getattr(getattr(model, "config", None), "_name_or_path", "") or "")
    if not (str(directory) and (directory / "preprocessor_config.json").is_file()):
        return None
    from transformers import AutoImageProcessor

    return _ImageProcessor(AutoImageProcessor.from_pretrained(directory, local_files_only=True))


def _preset(model: nn.Module | None, weights: str):
    """The classification preset of torchvision's ``weights``, refused by name when ``model`` takes
    images of another size (torchvision builds the model for its weights; we build what was asked)."""
    from torchvision.models import get_weight

    preset = get_weight(weights).transforms()
    crop = tuple(preset.crop_size)
    crop = crop * 2 if len(crop) == 1 else crop
    size = _input_size(model) if model is not None else None
    if size is not None and size != crop:
        raise ValueError(
            f"weights {weights}: their preset makes {crop[0]}x{crop[1]} images, the model takes "
            f"{size[0]}x{size[1]}; build it for theirs (torchvision's ViT: --model-kwargs "
            f"image_size={crop[0]}; MaxViT: input_size={list(crop)})"
        )
    return preset


def load_dataset(
    spec: str, default_split: str = "test", model: nn.Module | None = None, weights: str | None = None
) -> Dataset:
    """The dataset a spec names; images come out as float tensors ready for the model.

    Args:
        spec: see the module docstring.
        default_split: the split of digits / CIFAR when the spec gives none.
        model: the ANN, whose timm data config preprocesses image folders and CIFAR.
        weights: torchvision weights (``Swin_T_Weights.IMAGENET1K_V1``) whose preset preprocesses
            them instead.
    """
    kind, path, split = parse_spec(spec, default_split)
    if kind == "digits":
        return TensorDataset(*load_digits_split(split))
    if kind == "npz":
        return _npz(path)
    transform = _preset(model, weights) if weights else _hf_processor(model) or _timm_transform(model, spec)
    if kind == "filelist":
        return file_list(*list_and_root(spec, path), transform, _classes(model))
    if kind == "images":
        return image_files(Path(path), transform)
    if kind == "imagefolder":
        from torchvision.datasets import ImageFolder

        try:
            return ImageFolder(path, transform=transform, loader=read_image)
        except (FileNotFoundError, RuntimeError) as error:
            raise ValueError(f"imagefolder data {path}: {error}") from None
    return CIFAR(Path(path), kind, split, transform)


def has_labels(dataset: Dataset) -> bool:
    """Whether a dataset's samples have labels: its first sample's is not :data:`UNLABELLED`
    (``images:PATH`` and npz files without ``y`` have none; an empty dataset counts as labelled)."""
    return len(dataset) == 0 or int(dataset[0][1]) != UNLABELLED


def spread(size: int, n: int | None) -> list[int]:
    """Which samples of a dataset of ``size`` a run of ``n`` of them takes: ``n`` spread evenly,
    sample ⌊i·size/n⌋ for i < n, so that data stored class by class (an image folder, ImageNet's
    validation list) gives every class its share, where the first ``n`` would give the first
    classes only; all of them when ``n`` is None or at least ``size``."""
    n = size if n is None else min(n, size)
    return [i * size // n for i in range(n)]


def list_and_root(spec: str, rest: str) -> tuple[Path, Path]:
    """The list file of a ``filelist:FILE[:ROOT]`` spec and the folder its relative paths start
    from (ROOT, or the file's own folder)."""
    if Path(rest).is_file():
        return Path(rest), Path(rest).parent
    head, _, tail = rest.rpartition(":")
    if head and Path(head).is_file():
        if not Path(tail).is_dir():
            raise ValueError(f"data spec {spec!r}: {tail} is not a folder")
        return Path(head), Path(tail)
    raise ValueError(f"data spec {spec!r}: {head or rest} is not a file")


def _classes(model: nn.Module | None) -> int | None:
    """The number of classes a timm or transformers classifier has, where it says."""
    classes = getattr(model, "num_classes", None)
    if classes is None:
        classes = getattr(getattr(model, "config", None), "num_labels", None)
    return classes if isinstance(classes, int) and classes > 0 else None


def read_list(file: Path, root: Path) -> list[tuple[int, Path, str]]:
    """(line number, image path, class) of each sample line of a list file: an image path and its
    class separated by a tab, a comma or spaces (further fields are ignored, such as Tiny-ImageNet's
    boxes; with a tab or a comma as separator, paths may hold spaces); empty lines and lines
    starting with # are skipped. Relative paths start from ``root``.

    Raises:
        ValueError: naming the file and line of a line without a class, or the images not found.
    """
    try:
        lines = file.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark is not a path
    except UnicodeDecodeError as error:
        raise ValueError(f"{file}: not a text file ({error})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        separator = "\t" if "\t" in line else "," if "," in line else None
        fields = [field.strip() for field in line.split(separator)]
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise ValueError(f"{file}, line {number}: expected an image path and its class, got {line!r}")
        rows.append((number, root / fields[0], fields[1]))  # an absolute path stays itself
    if not rows:
        raise ValueError(f"{file}: lists no images")
    missing = [(number, path) for number, path, _ in rows if not path.is_file()]
    if missing:
        number, path = missing[0]
        raise ValueError(
            f"{file}: {len(missing)} of {len(rows)} images not found, the first {path} (line {number})"
        )
    return rows


def class_indices(
    file: Path, rows: list[tuple[int, Path, str]], classes: int | None
) -> tuple[list[int], list[str]]:
    """The class index of each row of :func:`read_list`, and the classes' names by index (none
    for integer classes). Classes are either all integers (ImageNet's val.txt) or all names
    (WordNet ids), numbered in sorted order as ImageFolder numbers its class folders, which
    matches a model trained on such a folder only if every class appears.

    Raises:
        ValueError: given the model's number of ``classes``, a list naming another number of
            classes, or an integer class the model does not have (the file and line named).
    """
    names = [name for _, _, name in rows]
    if all(name.isascii() and name.isdigit() for name in names):
        for number, _, name in rows:
            if classes and int(name) >= classes:
                raise ValueError(f"{file}, line {number}: class {name}, but the model has {classes}")
        return [int(name) for name in names], []
    ordered = sorted(set(names))
    if classes and len(ordered) != classes:
        raise ValueError(
            f"{file} names {len(ordered)} classes and the model has {classes}: names are numbered in "
            "sorted order, which gives the model's classes only if all of them appear; give integer classes"
        )
    index = {name: i for i, name in enumerate(ordered)}
    return [index[name] for name in names], ordered


class ImageFiles(Dataset):
    """Image files with their labels (``classes``: the labels' names, by index, where known),
    through ``transform``."""

    def __init__(
        self, paths: list[Path], labels: list[int], transform=None, classes: list[str] | None = None
    ) -> None:
        self.paths, self.labels, self.transform, self.classes = paths, labels, transform, classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = read_image(self.paths[index])
        return (self.transform(image) if self.transform else image), self.labels[index]


def read_image(path: str | Path):
    """An image file as an RGB PIL image (torchvision's loader), or a ValueError naming the file."""
    from PIL import UnidentifiedImageError
    from torchvision.datasets.folder import default_loader

    try:
        return default_loader(str(path))
    except UnidentifiedImageError:
        raise ValueError(f"image {path}: not an image file PIL can read") from None
    except (OSError, SyntaxError) as error:  # a missing or truncated file, a malformed header
        raise ValueError(f"image {path}: cannot be read ({error})") from None


def file_list(file: Path, root: Path, transform=None, classes: int | None = None) -> ImageFiles:
    """The images a list file names (:func:`read_list`), labelled as :func:`class_indices` numbers
    their classes (names in sorted order, as ImageFolder's)."""
    rows = read_list(file, root)
    labels, names = class_indices(file, rows, classes)
    return ImageFiles([path for _, path, _ in rows], labels, transform, names)


def image_files(root: Path, transform=None) -> ImageFiles:
    """Every image file under ``root`` (any depth; the extensions torchvision's image folders read),
    sorted by path, each labelled :data:`UNLABELLED`."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS))
    if not paths:
        raise ValueError(f"images data {root}: no image files under it ({', '.join(IMG_EXTENSIONS)})")
    return ImageFiles(paths, [UNLABELLED] * len(paths), transform)


class _ArrayUnpickler(pickle.Unpickler):
    """Builds only numpy arrays and plain containers: any other global in the stream is refused."""

    ALLOWED = frozenset(
        [
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
        ]
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core"):  # numpy 2 moved numpy.core to numpy._core
            module = module.replace("numpy.core", "numpy._core") if hasattr(np, "_core") else module
        return getattr(importlib.import_module(module), name)


class CIFAR(Dataset):
    """CIFAR-10 / CIFAR-100 (python version) from disk, as PIL images through ``transform``."""

    LAYOUT: ClassVar[dict[str, tuple]] = {
        "cifar10": (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            ["test_batch"],
            "labels",
        ),
        "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
    }

    def __init__(self, root: Path, kind: str, split: str, transform=None) -> None:
        folder, train_files, test_files, label_key = self.LAYOUT[kind]
        data, labels = [], []
        for name in train_files if split == "train" else test_files:
            file = root / folder / name
            if not file.is_file():
                raise ValueError(
                    f"{kind} data {root}: {file} not found (the python version of the dataset is expected; "
                    "transpike never downloads datasets)"
                )
            try:
                with open(file, "rb") as handle:
                    entry = _ArrayUnpickler(handle, encoding="latin1").load()
                data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels.extend(int(label) for label in entry[label_key])
            except (pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError) as error:
                raise ValueError(f"{kind} data {file}: not a CIFAR batch file ({error})") from None
        self.images = np.concatenate(data).transpose(0, 2, 3, 1)  # HWC for PIL
        self.labels = labels
        if len(self.images) != len(self.labels):
            raise ValueError(f"{kind} data {root}: {len(self.images)} images but {len(self.labels)} labels")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image

        image = Image.fromarray(self.images[index])
        return (self.transform(image) if self.transform else image), self.labels[index]
