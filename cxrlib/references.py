"""Published numbers to compare against, each with the split it was measured on.

AUROC values from different splits are not comparable: the official ChestX-ray14 split is
harder than a random patient-wise one, and an image-level random split leaks patients from
train into test. So every number here carries its split, and the tables print it beside it.
Sources: the papers named in each row (see the project's reference notes).
"""
from __future__ import annotations

import pandas as pd

from cxrlib.labels import FINDINGS

SPLIT_STUDY = "the study's own split"
SPLIT_OFFICIAL = "official patient-wise (test_list.txt, 25,596 images)"
SPLIT_CHEXNET = "random patient-wise 70/10/20 (CheXNet)"
SPLIT_IMAGE_LEVEL = "image-level random (patients leak; inflated)"

# (model, mean AUROC over 14 findings, note). The study this project grows from; it also
# tried NASNet (no figure reported) and did not reproduce the two-stage attention model.
STUDY: list[tuple[str, float, str]] = [
    ("ResNet-18", 0.8159, ""),
    ("ResNet-50", 0.8168, ""),
    ("Inception-v3", 0.8172, ""),
    ("DenseNet-121", 0.8412, ""),
    ("ResNet-50 + 15 labels", 0.8066, "No Finding as a 15th output"),
    ("ResNet-50 + FPN", 0.8171, ""),
    ("ResNet-50 + PSP", 0.8169, ""),
    ("ResNet-50 + multi-scale input", 0.8170, ""),
]

# (reference, model, mean AUROC, split, note)
PUBLISHED: list[tuple[str, str, float, str, str]] = [
    ("Wang et al. 2017 (ChestX-ray8)", "ResNet-50", 0.745, SPLIT_OFFICIAL, ""),
    ("Guendel et al. 2018 (DNetLoc)", "DenseNet-121", 0.807, SPLIT_OFFICIAL, "extra PLCO training data"),
    ("Xiao et al. 2023", "DenseNet-121, ImageNet", 0.822, SPLIT_OFFICIAL, ""),
    ("Xiao et al. 2023", "ViT-S, ImageNet", 0.796, SPLIT_OFFICIAL, ""),
    ("Xiao et al. 2023", "ViT-B, MAE on X-rays", 0.830, SPLIT_OFFICIAL, ""),
    ("Taslimi et al. 2022 (SwinCheX)", "Swin", 0.810, SPLIT_OFFICIAL, ""),
    ("Rajpurkar et al. 2017 (CheXNet)", "DenseNet-121", 0.841, SPLIT_CHEXNET, ""),
    ("arnoweng/CheXNet", "DenseNet-121", 0.847, SPLIT_CHEXNET, "ten-crop at test time"),
    ("jrzech/reproduce-chexnet", "DenseNet-121", 0.838, SPLIT_CHEXNET, ""),
    ("Doerrich et al. 2024 (MedMNIST+)", "DenseNet-121, 28 px", 0.759, SPLIT_CHEXNET, "ChestMNIST"),
    ("Doerrich et al. 2024 (MedMNIST+)", "DenseNet-121, 64 px", 0.787, SPLIT_CHEXNET, "ChestMNIST"),
    ("Doerrich et al. 2024 (MedMNIST+)", "DenseNet-121, 128 px", 0.812, SPLIT_CHEXNET, "ChestMNIST"),
    ("Doerrich et al. 2024 (MedMNIST+)", "DenseNet-121, 224 px", 0.822, SPLIT_CHEXNET, "ChestMNIST"),
    ("Doerrich et al. 2024 (MedMNIST+)", "ResNet-18, 28 px", 0.738, SPLIT_CHEXNET, "ChestMNIST"),
    ("Doerrich et al. 2024 (MedMNIST+)", "ResNet-18, 64 px", 0.756, SPLIT_CHEXNET, "ChestMNIST"),
    ("Doerrich et al. 2024 (MedMNIST+)", "ResNet-18, 128 px", 0.782, SPLIT_CHEXNET, "ChestMNIST"),
    ("Doerrich et al. 2024 (MedMNIST+)", "ResNet-18, 224 px", 0.790, SPLIT_CHEXNET, "ChestMNIST"),
    ("Guan et al. 2018 (AG-CNN)", "ResNet-50, global branch", 0.841, SPLIT_IMAGE_LEVEL, ""),
    ("Guan et al. 2018 (AG-CNN)", "ResNet-50, two-stage", 0.868, SPLIT_IMAGE_LEVEL, ""),
    ("Guan et al. 2018 (AG-CNN)", "DenseNet-121, two-stage", 0.871, SPLIT_IMAGE_LEVEL, ""),
]

# CheXNet's per-class test AUROC (Rajpurkar et al. 2017), random patient-wise split.
CHEXNET_PER_CLASS: dict[str, float] = dict(zip(FINDINGS, (
    0.8094, 0.9248, 0.8638, 0.7345, 0.8676, 0.7802, 0.7680,
    0.8887, 0.7901, 0.8878, 0.9371, 0.8047, 0.8062, 0.9164,
)))

# Wang et al. 2017 (ChestX-ray14 appendix): T(IoBB) accuracy per finding, official boxes.
WANG_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
                 "Pneumonia", "Pneumothorax")
WANG_IOBB: dict[float, tuple[float, ...]] = {
    0.1: (0.622, 1.0, 0.797, 0.911, 0.588, 0.152, 0.858, 0.520),
    0.25: (0.394, 0.986, 0.634, 0.797, 0.459, 0.051, 0.708, 0.337),
    0.5: (0.194, 0.945, 0.418, 0.650, 0.306, 0.0, 0.483, 0.265),
}
# Mean box area as a share of the image in BBox_List_2017.csv: the pointing game's chance level.
BOX_AREA_SHARE: dict[str, float] = {
    "Atelectasis": 0.032, "Cardiomegaly": 0.176, "Effusion": 0.069, "Infiltration": 0.097,
    "Mass": 0.042, "Nodule": 0.005, "Pneumonia": 0.094, "Pneumothorax": 0.052,
}


def study_table() -> pd.DataFrame:
    """The study's mean AUROC per model, with its split."""
    return pd.DataFrame(
        [(m, v, SPLIT_STUDY, note) for m, v, note in STUDY],
        columns=["model", "mean AUROC", "split", "note"],
    )


def published_table() -> pd.DataFrame:
    """Published ChestX-ray14 mean AUROCs, each with the split it was measured on."""
    return pd.DataFrame(PUBLISHED, columns=["reference", "model", "mean AUROC", "split", "note"])


def chexnet_per_class() -> pd.DataFrame:
    return pd.DataFrame(
        {"finding": list(CHEXNET_PER_CLASS), "CheXNet AUROC": list(CHEXNET_PER_CLASS.values())}
    ).assign(split=SPLIT_CHEXNET)


def localization_reference() -> pd.DataFrame:
    """Wang et al. 2017's T(IoBB) accuracy and the mean box area (chance level) per finding."""
    df = pd.DataFrame({"finding": WANG_FINDINGS})
    for t, values in WANG_IOBB.items():
        df[f"T(IoBB>{t}) Wang 2017"] = values
    df["mean box area share"] = [BOX_AREA_SHARE[f] for f in WANG_FINDINGS]
    df["split"] = SPLIT_OFFICIAL
    return df
