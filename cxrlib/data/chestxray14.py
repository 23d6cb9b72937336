"""NIH ChestX-ray14 as NIH ships it: the Data_Entry table, split lists, image folders, boxes.

Everything here works on the folder a user downloaded (``Data_Entry_2017.csv`` or
``Data_Entry_2017_v2020.csv``, ``train_val_list.txt``, ``test_list.txt``,
``BBox_List_2017.csv``, and images in ``images/`` or ``images_001/images/`` ...). A
partial download is normal: images listed but absent are counted and left out.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlib.labels import FINDINGS, NUM_FINDINGS, canonical, parse_finding_labels, targets_with_no_finding

DATA_ENTRY_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
BOX_LIST_NAME = "BBox_List_2017.csv"
# Box coordinates in BBox_List_2017.csv refer to the 1024 x 1024 release images.
BOX_IMAGE_SIZE = 1024
PARTS = ("train", "val", "test")


@dataclass
class Table:
    """The Data_Entry table reduced to what training needs, rows in file order."""

    image_ids: np.ndarray  # str [N]
    patient_ids: np.ndarray  # int64 [N]
    targets: np.ndarray  # float32 [N, 14 or 15]
    label_names: list[str]
    path: Path

    def __len__(self) -> int:
        return len(self.image_ids)

    def rows(self, image_ids) -> np.ndarray:
        """Row numbers of ``image_ids``; KeyError naming the first few unknown ones."""
        index = pd.Index(self.image_ids)
        rows = index.get_indexer(np.asarray(image_ids, dtype=str))
        if (rows < 0).any():
            bad = np.asarray(image_ids, dtype=str)[rows < 0]
            raise KeyError(f"{len(bad)} image(s) not in {self.path.name}, e.g. {list(bad[:3])}")
        return rows


@dataclass(frozen=True)
class Box:
    """A finding's bounding box, ``x, y, w, h`` in pixels of an ``image_size``-square image."""

    finding: str
    x: float
    y: float
    w: float
    h: float
    image_size: int = BOX_IMAGE_SIZE

    def scaled(self, f: float) -> "Box":
        return Box(self.finding, self.x * f, self.y * f, self.w * f, self.h * f, round(self.image_size * f))

    def to_size(self, from_size: float, to_size: float) -> "Box":
        """The same box on the image resized from ``from_size`` to ``to_size`` pixels."""
        box = self.scaled(float(to_size) / float(from_size))
        return Box(box.finding, box.x, box.y, box.w, box.h, int(round(to_size)))

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return self.x, self.y, self.x + self.w, self.y + self.h


# --------------------------------------------------------------------------- files

# Data_Entry's metadata columns and the names cxrlib gives them (cxrlib.data.sources.METADATA_COLUMNS)
_METADATA_SOURCE = {"View Position": "view_position", "Patient Age": "age", "Patient Gender": "sex",
                    "Follow-up #": "follow_up"}


def read_metadata(path: str | os.PathLike) -> pd.DataFrame:
    """The Data_Entry table's metadata by image id: ``view_position`` (AP/PA), ``age`` (years;
    NaN where unreadable), ``sex`` (M/F), ``follow_up`` (the image's follow-up number); only the
    columns the file has."""
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot parse as the ChestX-ray14 Data_Entry CSV ({err})") from None
    if "Image Index" not in raw.columns:
        raise ValueError(f"{path}: no 'Image Index' column; found {list(raw.columns)[:10]}")
    out = pd.DataFrame(index=pd.Index(raw["Image Index"].str.strip(), name="image_id"))
    for src, dst in _METADATA_SOURCE.items():
        if src not in raw.columns:
            continue
        values = raw[src].str.strip().to_numpy()
        out[dst] = pd.to_numeric(values, errors="coerce") if dst in ("age", "follow_up") else values
    return out


def find_data_entry(data_dir: str | os.PathLike) -> Path:
    """The Data_Entry table in ``data_dir`` (the 2020 relabel preferred when both exist)."""
    data_dir = Path(data_dir)
    for name in DATA_ENTRY_NAMES:
        if (data_dir / name).is_file():
            return data_dir / name
    if not data_dir.is_dir():
        raise FileNotFoundError(f"ChestX-ray14 folder {data_dir} does not exist; set data_dir to the downloaded folder")
    raise FileNotFoundError(
        f"no {' or '.join(DATA_ENTRY_NAMES)} in {data_dir}: download it from the NIH ChestX-ray14 "
        "release (see data/README.md) and put it beside the images folders")


def read_data_entry(path: str | os.PathLike, include_no_finding: bool = False) -> Table:
    """Parse the Data_Entry table: targets in CheXNet order, unknown labels an error with the row."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={"Image Index": str, "Finding Labels": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot parse as the ChestX-ray14 Data_Entry CSV ({err})") from None
    need = ["Image Index", "Finding Labels", "Patient ID"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(df.columns)[:10]}")
    labels = df["Finding Labels"].astype(str).to_numpy()
    # ~800 distinct label strings among 112,120 rows: parse each once.
    uniques, inverse = np.unique(labels, return_inverse=True)
    first_row = np.full(len(uniques), -1)
    first_row[inverse[::-1]] = np.arange(len(labels))[::-1]
    parsed = np.stack([
        parse_finding_labels(u, include_no_finding,
                             where=f"{path.name} row {first_row[k] + 2} ({df['Image Index'].iloc[first_row[k]]})")
        for k, u in enumerate(uniques)
    ]) if len(uniques) else np.zeros((0, NUM_FINDINGS + int(include_no_finding)), np.float32)
    try:
        patients = pd.to_numeric(df["Patient ID"], errors="raise").to_numpy(dtype=np.int64)
    except ValueError as err:
        raise ValueError(f"{path}: column 'Patient ID' must hold integers ({err})") from None
    image_ids = df["Image Index"].astype(str).str.strip().to_numpy(dtype=str)
    dup = pd.Index(image_ids).duplicated()
    if dup.any():
        raise ValueError(f"{path}: image ids repeated, e.g. {list(image_ids[dup][:3])}")
    names = list(FINDINGS) + (["No Finding"] if include_no_finding else [])
    return Table(image_ids, patients, parsed[inverse].astype(np.float32), names, path)


def image_folders(data_dir: str | os.PathLike) -> list[Path]:
    """Folders that may hold images: ``images/`` and the tarballs' ``images_0XX/images/``."""
    data_dir = Path(data_dir)
    folders = [data_dir / "images"]
    folders += sorted(p / "images" for p in data_dir.glob("images_*") if p.is_dir())
    # Some unpackers drop the inner images/ folder.
    folders += sorted(p for p in data_dir.glob("images_*") if p.is_dir() and not (p / "images").is_dir())
    return folders


def find_images(data_dir: str | os.PathLike) -> dict[str, Path]:
    """Image id -> file for every PNG present in the image folders of ``data_dir``."""
    found: dict[str, Path] = {}
    for folder in image_folders(data_dir):
        if not folder.is_dir():
            continue
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.lower().endswith(".png") and entry.is_file():
                    found.setdefault(entry.name, Path(entry.path))
    return found


def where_looked(data_dir: str | os.PathLike) -> str:
    data_dir = Path(data_dir)
    return f"{data_dir / 'images'} and {data_dir / 'images_0XX' / 'images'} (images_001 ... images_012)"


def read_list(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """A split list: one image name per line, or CheXNet's ``<image> <14 x 0/1>`` lines.

    Returns (image ids, targets float32 [N, 14] or None for plain lists).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split list {path} not found")
    ids: list[str] = []
    rows: list[list[float]] = []
    labelled: bool | None = None
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        has = len(parts) > 1
        if labelled is None:
            labelled = has
        if has != labelled or (has and len(parts) != 1 + NUM_FINDINGS):
            raise ValueError(
                f"{path} line {lineno}: expected {'an image name and 14 labels' if labelled else 'one image name'}"
                f", got {len(parts)} field(s): {line.strip()[:80]!r}")
        ids.append(os.path.basename(parts[0]))
        if has:
            try:
                values = [float(v) for v in parts[1:]]
            except ValueError:
                raise ValueError(f"{path} line {lineno}: labels must be 0 or 1, got {parts[1:]}") from None
            if any(v not in (0.0, 1.0) for v in values):
                raise ValueError(f"{path} line {lineno}: labels must be 0 or 1, got {parts[1:]}")
            rows.append(values)
    if not ids:
        raise ValueError(f"split list {path} is empty")
    dup = pd.Index(ids).duplicated()
    if dup.any():
        raise ValueError(f"{path}: image names repeated, e.g. {list(np.asarray(ids)[dup][:3])}")
    return np.asarray(ids, dtype=str), (np.asarray(rows, dtype=np.float32) if labelled else None)


# --------------------------------------------------------------------------- splits

@dataclass
class Split:
    """Image ids per part, their patients and targets, and a human name for tables."""

    name: str
    image_ids: dict[str, np.ndarray]
    patient_ids: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]

    def sizes(self) -> dict[str, int]:
        return {p: len(v) for p, v in self.image_ids.items()}


def check_patient_overlap(patient_ids: dict[str, np.ndarray], what: str = "split") -> None:
    """ValueError when a patient appears in two parts (images of one patient leak)."""
    parts = list(patient_ids)
    for a_i, a in enumerate(parts):
        for b in parts[a_i + 1:]:
            both = np.intersect1d(patient_ids[a], patient_ids[b])
            if len(both):
                raise ValueError(
                    f"{what}: {len(both)} patient(s) are in both {a} and {b} (e.g. {list(both[:5])}); "
                    "a patient's images must all be in one part, or the test score is inflated")


def patient_of(image_id: str) -> int:
    """NIH names images ``<patient>_<follow-up>.png``."""
    try:
        return int(str(image_id).split("_")[0])
    except ValueError:
        raise ValueError(f"cannot read a patient id from image name {image_id!r} (expected 00012345_000.png)") from None


def _from_table(table: Table, ids: np.ndarray, where: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        rows = table.rows(ids)
    except KeyError as err:
        raise ValueError(f"{where}: {err.args[0]}; is the list from the same release as the table?") from None
    return table.patient_ids[rows], table.targets[rows]


def official_split(data_dir: str | os.PathLike, table: Table, val_fraction: float = 0.1, seed: int = 0) -> Split:
    """NIH's patient-wise lists; validation = a seeded ``val_fraction`` of train_val patients.

    The validation patients are drawn from the whole list (not only the downloaded
    images), so a patient's part does not change as more of the download arrives.
    """
    data_dir = Path(data_dir)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    tv_ids, _ = read_list(data_dir / "train_val_list.txt")
    test_ids, _ = read_list(data_dir / "test_list.txt")
    tv_pat, tv_y = _from_table(table, tv_ids, data_dir / "train_val_list.txt")
    te_pat, te_y = _from_table(table, test_ids, data_dir / "test_list.txt")
    check_patient_overlap({"train_val_list.txt": tv_pat, "test_list.txt": te_pat}, "official split")
    patients = np.unique(tv_pat)
    order = np.random.default_rng(seed).permutation(len(patients))
    n_val = int(round(val_fraction * len(patients)))
    is_val = np.isin(tv_pat, patients[order[:n_val]])
    split = Split(
        "official patient-wise split (test_list.txt)",
        {"train": tv_ids[~is_val], "val": tv_ids[is_val], "test": test_ids},
        {"train": tv_pat[~is_val], "val": tv_pat[is_val], "test": te_pat},
        {"train": tv_y[~is_val], "val": tv_y[is_val], "test": te_y},
    )
    check_patient_overlap(split.patient_ids, split.name)
    return split


def _list_files(folder: Path) -> dict[str, Path]:
    found = {}
    for part in PARTS:
        for name in (f"{part}_list.txt", f"{part}.txt", f"{part}_list.csv"):
            if (folder / name).is_file():
                found[part] = folder / name
                break
    return found


def list_split(folder: str | os.PathLike, table: Table | None, name: str,
               include_no_finding: bool = False) -> Split:
    """A split from ``train``/``val``/``test`` list files in ``folder`` (CheXNet or custom).

    Labelled lines (CheXNet's format) keep their own labels, because those define the
    benchmark; plain names take theirs from the Data_Entry table.
    """
    folder = Path(folder)
    files = _list_files(folder)
    missing = [p for p in PARTS if p not in files]
    if missing:
        raise FileNotFoundError(
            f"split folder {folder}: no list file for {missing}; expected {', '.join(p + '_list.txt' for p in PARTS)}")
    ids, pats, ys = {}, {}, {}
    for part, path in files.items():
        part_ids, labels = read_list(path)
        if labels is not None:
            if include_no_finding:
                labels = targets_with_no_finding(labels)
            # Patients from the table where it lists the image, else from the file name.
            pats[part] = np.array([patient_of(i) for i in part_ids], dtype=np.int64)
            if table is not None:
                rows = pd.Index(table.image_ids).get_indexer(part_ids)
                pats[part][rows >= 0] = table.patient_ids[rows[rows >= 0]]
            ys[part] = labels
        else:
            if table is None:
                raise ValueError(f"{path} has no labels and there is no Data_Entry table to take them from")
            pats[part], ys[part] = _from_table(table, part_ids, path)
        ids[part] = part_ids
    for a_i, a in enumerate(PARTS):
        for b in PARTS[a_i + 1:]:
            both = np.intersect1d(ids[a], ids[b])
            if len(both):
                raise ValueError(f"split {folder}: {len(both)} image(s) in both {a} and {b}, e.g. {list(both[:3])}")
    split = Split(name, ids, pats, ys)
    check_patient_overlap(split.patient_ids, f"split {folder}")
    return split


def chexnet_split(data_dir: str | os.PathLike, table: Table | None = None, include_no_finding: bool = False) -> Split:
    """CheXNet's random patient-wise 70/10/20 lists (``chexnet_split/`` or beside the table)."""
    data_dir = Path(data_dir)
    for folder in (data_dir / "chexnet_split", data_dir / "chexnet", data_dir / "labels", data_dir):
        if len(_list_files(folder)) == 3:
            return list_split(folder, table, "CheXNet random patient-wise 70/10/20", include_no_finding)
    raise FileNotFoundError(
        f"no CheXNet split under {data_dir}: put train_list.txt, val_list.txt, test_list.txt "
        f"(from arnoweng/CheXNet, '<image> <14 x 0/1>' per line) in {data_dir / 'chexnet_split'}")


def load_split(data_dir: str | os.PathLike, split: str, table: Table, val_fraction: float = 0.1,
               seed: int = 0) -> Split:
    """``official``, ``chexnet``, or a folder of custom list files."""
    include_nf = len(table.label_names) > NUM_FINDINGS
    if split == "official":
        return official_split(data_dir, table, val_fraction, seed)
    if split == "chexnet":
        return chexnet_split(data_dir, table, include_nf)
    folder = Path(split)
    if not folder.is_absolute() and not folder.is_dir():
        folder = Path(data_dir) / split
    if not folder.is_dir():
        raise ValueError(f"split {split!r}: expected 'official', 'chexnet', or a folder with train/val/test list files")
    return list_split(folder, table, f"custom split ({folder.name})", include_nf)


def limit_part(image_ids: np.ndarray, patient_ids: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Indices of at most ``limit`` images, whole patients first, the same for the same seed.

    Patients are taken in a seeded random order, all their images together, so a capped
    part still holds several images per patient like the full one.
    """
    n = len(image_ids)
    if limit is None or n <= limit:
        return np.arange(n)
    if limit < 0:
        raise ValueError(f"limit must be a positive number of images, got {limit}")
    patients = np.unique(patient_ids)
    rank = np.empty(len(patients), dtype=np.int64)
    rank[np.random.default_rng(seed).permutation(len(patients))] = np.arange(len(patients))
    order = np.lexsort((image_ids, rank[np.searchsorted(patients, patient_ids)]))
    return np.sort(order[:limit])


# --------------------------------------------------------------------------- boxes

def read_boxes(path: str | os.PathLike) -> dict[str, list[Box]]:
    """``BBox_List_2017.csv`` as image id -> boxes (1024-pixel coordinates, CheXNet names)."""
    path = Path(path)
    try:
        df = pd.read_csv(path, header=0, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot parse as the ChestX-ray14 box list ({err})") from None
    # The header is "Image Index,Finding Label,Bbox [x,y,w,h],,," : the quoted-looking
    # name splits into four columns and three empty ones trail; read by position.
    if df.shape[1] < 6:
        raise ValueError(f"{path}: expected 6 columns (image, finding, x, y, w, h), found {df.shape[1]}")
    boxes: dict[str, list[Box]] = {}
    for row, values in enumerate(df.iloc[:, :6].itertuples(index=False, name=None), start=2):
        image_id, finding = str(values[0]).strip(), str(values[1]).strip()
        if not image_id:
            continue
        try:
            finding = canonical(finding)
            x, y, w, h = (float(v) for v in values[2:6])
        except ValueError as err:
            raise ValueError(f"{path} row {row}: {err}") from None
        if w <= 0 or h <= 0:
            raise ValueError(f"{path} row {row}: box width and height must be positive, got w={w}, h={h}")
        boxes.setdefault(image_id, []).append(Box(finding, x, y, w, h, BOX_IMAGE_SIZE))
    return boxes
