"""Dataset discovery for the three layouts users bring: MSD, nnU-Net v2, and plain folder pairs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medseg.dicom import extracted_zip, series_folder, series_in
from medseg.errors import MedsegError
from medseg.io import IMAGE_SUFFIXES, case_id, image_stem, is_image_path


@dataclass(frozen=True)
class Case:
    """One training case: an image and (for labelled data) its label map."""

    case_id: str
    image: Path
    label: Path | None


def loader_items(cases: list[Case]) -> list[dict]:
    """The dictionaries MONAI's datasets and transforms take: file paths by key, and the case id."""
    return [{"image": str(c.image), "label": str(c.label), "case_id": c.case_id} for c in cases]


@dataclass
class Dataset:
    """A discovered dataset; ``class_names[k]`` names label value k (0 is background)."""

    root: Path
    layout: str
    cases: list[Case]
    class_names: list[str] | None
    modality: str | None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MedsegError(f"{path}: cannot read dataset.json ({exc})") from None
    if not isinstance(data, dict):
        raise MedsegError(f"{path}: expected a JSON object")
    return data


def _class_names(labels: dict, path: Path) -> list[str]:
    """MSD maps value -> name ({"0": "background"}); nnU-Net v2 maps name -> value."""
    try:
        if all(str(k).lstrip("-").isdigit() for k in labels):
            by_value = {int(k): str(v) for k, v in labels.items()}
        else:
            by_value = {int(v): str(k) for k, v in labels.items()}
    except (TypeError, ValueError):
        raise MedsegError(f"{path}: 'labels' must map label values to names (or names to integer values)") from None
    if sorted(by_value) != list(range(len(by_value))):
        raise MedsegError(f"{path}: label values must be 0..K-1 without gaps, got {sorted(by_value)}")
    return [by_value[k] for k in range(len(by_value))]


def _modality(meta: dict) -> str | None:
    channels = meta.get("channel_names") or meta.get("modality") or {}
    if len(channels) > 1:
        raise MedsegError(f"dataset has {len(channels)} input channels; medseg handles single-channel images only")
    return str(next(iter(channels.values()))) if channels else None


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name.lower().endswith(IMAGE_SUFFIXES))


def _msd(root: Path, meta: dict, json_path: Path, require_labels: bool) -> list[Case]:
    cases = []
    for i, entry in enumerate(meta["training"]):
        if not isinstance(entry, dict) or "image" not in entry:
            raise MedsegError(f"{json_path}: training entry {i} has no 'image'")
        image = (root / entry["image"]).resolve()
        label = (root / entry["label"]).resolve() if entry.get("label") else None
        if require_labels and label is None:
            raise MedsegError(f"{json_path}: training entry {i} has no 'label'")
        cases.append(Case(case_id(image), image, label))
    return cases


def _paired(root: Path, require_labels: bool, ending: str | None = None) -> list[Case]:
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise MedsegError(f"{root}: no dataset.json with a 'training' list and no imagesTr/ folder")
    images = [p for p in _image_files(images_dir) if ending is None or p.name.endswith(ending)]
    labels = {image_stem(p): p for p in _image_files(labels_dir)} if labels_dir.is_dir() else {}
    if not images:
        raise MedsegError(f"{images_dir}: no images found (expected {', '.join(IMAGE_SUFFIXES)} files)")
    cases = []
    for image in images:
        label = labels.get(image_stem(image)) or labels.get(case_id(image))
        cid = image_stem(label) if label is not None else case_id(image)
        if require_labels and label is None:
            raise MedsegError(f"{image}: no label for case '{cid}' in {labels_dir}")
        cases.append(Case(cid, image, label))
    return cases


def discover_dataset(root: str | Path, require_labels: bool = True) -> Dataset:
    """Find cases, class names and modality in ``root``, whatever its layout."""
    root = Path(root)
    if not root.is_dir():
        raise MedsegError(f"{root}: dataset folder not found")
    json_path = root / "dataset.json"
    meta = _read_json(json_path) if json_path.is_file() else {}
    names = _class_names(meta["labels"], json_path) if isinstance(meta.get("labels"), dict) else None
    if isinstance(meta.get("training"), list):
        layout, cases = "msd", _msd(root, meta, json_path, require_labels)
    elif meta:
        layout, cases = "nnunetv2", _paired(root, require_labels, meta.get("file_ending"))
    else:
        layout, cases = "plain", _paired(root, require_labels)
    if not cases:
        raise MedsegError(f"{root}: dataset has no cases")
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise MedsegError(f"{root}: case ids are not unique")
    return Dataset(root, layout, cases, names, _modality(meta))


def list_inputs(path: str | Path, series: str | None = None) -> list[Path]:
    """Images to predict: one file, a DICOM series folder, or a folder of image files or series folders;
    a ``.zip`` of any of these. ``series`` picks one DICOM series (by Series Instance UID) of a folder
    that holds several."""
    path = Path(path)
    if not path.exists():
        raise MedsegError(f"{path}: no such file or folder")
    if path.is_file() and path.name.lower().endswith(".zip"):
        path = extracted_zip(path)
        inner = [p for p in path.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(inner) == 1 and inner[0].is_dir() and not series_in(path):
            path = inner[0]  # the archive of one folder: that folder
    if series is not None:
        if not path.is_dir():
            raise MedsegError(f"{path}: --series needs a folder (or .zip) of DICOM files")
        return [series_folder(path, series)]
    if path.is_file():
        if not is_image_path(path):
            raise MedsegError(f"{path}: not a supported image ({', '.join(IMAGE_SUFFIXES)} or a DICOM folder)")
        return [path]
    files = _image_files(path)
    if files:
        return files
    subfolders = sorted(p for p in path.iterdir() if p.is_dir())
    found = [p for p in [path, *subfolders] if is_image_path(p)]
    if not found:
        raise MedsegError(f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)}) and no DICOM series")
    return found
