"""Published numbers to compare against, each with the split it was measured on.

AUROC values from different splits are not comparable: the official ChestX-ray14 split is
harder than a random patient-wise one; every paper that drew a random split drew its own,
so two random 70/10/20 splits are two different test sets; and a split that does not keep
patients apart can leak them from train into test. So every number here carries its own
split label, and the tables print it beside it. Sources: the papers named in each row (see
the project's reference notes).
"""
from __future__ import annotations

import pandas as pd

from cxrlib.labels import FINDINGS

SPLIT_STUDY = "the study's own split"
SPLIT_OFFICIAL = "official patient-wise (test_list.txt, 25,596 images)"
# Random patient-wise 70/10/20 splits: each paper drew its own, so each is its own test set
# (CheXNet never released its split). They are labelled one by one, so that no two of them
# share a label and read as comparable; they compare only roughly with each other, never
# with the official split.
SPLIT_CHEXNET = "random patient-wise 70/10/20 (CheXNet)"
SPLIT_ARNOWENG = "random patient-wise 70/10/20 (arnoweng/CheXNet's chexnet_split/)"
SPLIT_JRZECH = "random patient-wise 70/10/20 (jrzech/reproduce-chexnet's own draw)"
SPLIT_CHESTMNIST = "random patient-wise 70/10/20 (ChestMNIST's split)"
SPLIT_LARGE_RANDOM = "random split, ~22.9k test images (MaCo's)"
SPLIT_AGCNN = "random 70/10/20, patient separation not stated (AG-CNN)"
DIFFERENT_DRAW = "a random draw of its own: not CheXNet's test set"

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
    ("Ma et al. 2023 (Ark)", "fine-tuned on all NIH labels", 0.829, SPLIT_OFFICIAL,
     "as quoted in MaCo (Nature Comms 2024), Table 1"),
    ("Rajpurkar et al. 2017 (CheXNet)", "DenseNet-121", 0.841, SPLIT_CHEXNET,
     "split never released; 14 findings trained with unweighted BCE"),
    ("arnoweng/CheXNet", "DenseNet-121, plain re-implementation", 0.843, SPLIT_ARNOWENG,
     f"mean of its table; ten-crop at test time; {DIFFERENT_DRAW}"),
    ("arnoweng/CheXNet", "DenseNet-121, their \"improved\" model", 0.847, SPLIT_ARNOWENG,
     f"README text (0.848 as the mean of its per-class table); ten-crop; {DIFFERENT_DRAW}"),
    ("jrzech/reproduce-chexnet", "DenseNet-121", 0.838, SPLIT_JRZECH, DIFFERENT_DRAW),
    ("Doerrich et al. 2024 (MedMNIST+)", "DenseNet-121, 28 px", 0.759, SPLIT_CHESTMNIST, "not verified against the paper"),
    ("Doerrich et al. 2024 (MedMNIST+)", "DenseNet-121, 64 px", 0.787, SPLIT_CHESTMNIST, "not verified against the paper"),
    ("Doerrich et al. 2024 (MedMNIST+)", "DenseNet-121, 128 px", 0.812, SPLIT_CHESTMNIST, "not verified against the paper"),
    ("Doerrich et al. 2024 (MedMNIST+)", "DenseNet-121, 224 px", 0.822, SPLIT_CHESTMNIST, "not verified against the paper"),
    ("Doerrich et al. 2024 (MedMNIST+)", "ResNet-18, 28 px", 0.738, SPLIT_CHESTMNIST, "not verified against the paper"),
    ("Doerrich et al. 2024 (MedMNIST+)", "ResNet-18, 64 px", 0.756, SPLIT_CHESTMNIST, "not verified against the paper"),
    ("Doerrich et al. 2024 (MedMNIST+)", "ResNet-18, 128 px", 0.782, SPLIT_CHESTMNIST, "not verified against the paper"),
    ("Doerrich et al. 2024 (MedMNIST+)", "ResNet-18, 224 px", 0.790, SPLIT_CHESTMNIST, "not verified against the paper"),
    ("MaCo (Nature Comms 2024), Table 1", "MRM / MaCo", 0.859, SPLIT_LARGE_RANDOM, "not the official split"),
    ("Guan et al. 2018 (AG-CNN)", "ResNet-50, global branch", 0.841, SPLIT_AGCNN, ""),
    ("Guan et al. 2018 (AG-CNN)", "ResNet-50, two-stage", 0.868, SPLIT_AGCNN, ""),
    ("Guan et al. 2018 (AG-CNN)", "DenseNet-121, two-stage", 0.871, SPLIT_AGCNN, ""),
]

# What CheXNet trained (Rajpurkar et al. 2017), for notebooks that name its recipe. Its
# weighted BCE was the loss of its binary pneumonia task; the 14-finding model optimised the
# sum of unweighted binary cross-entropies, so per-class weighted BCE is not its recipe.
CHEXNET_RECIPE = ("ImageNet-pretrained DenseNet-121, 224 px, batch 16, Adam lr 1e-3 divided by 10 on a "
                  "validation-loss plateau, horizontal flips, ImageNet normalisation; for the 14 findings "
                  "the sum of unweighted binary cross-entropies")

# CheXNet's per-class test AUROC (Rajpurkar et al. 2017), random patient-wise split.
CHEXNET_PER_CLASS: dict[str, float] = dict(zip(FINDINGS, (
    0.8094, 0.9248, 0.8638, 0.7345, 0.8676, 0.7802, 0.7680,
    0.8887, 0.7901, 0.8878, 0.9371, 0.8047, 0.8062, 0.9164,
)))

# Localization on the release's boxes (984 boxes on 880 images, 8 findings): accuracy at
# T(IoBB) per finding, in WANG_FINDINGS order. These are scores on the 880 boxed images
# under each paper version's own protocol, not results on a patient-wise test split. Wang
# et al. report them together with the average number of false-positive boxes per image
# (AFP); the AFP values are not in the project's reference notes, so they are left empty
# rather than quoted from memory.
WANG_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
                 "Pneumonia", "Pneumothorax")
WANG_CVPR = "Wang et al., CVPR 2017, Table 4"
WANG_CVPR_PROTOCOL = ("ResNet-50 heatmaps scored on the 880 boxed images; that version shuffled "
                      "the whole dataset, not the official split")
WANG_V5 = "Wang et al., ChestX-ray14 update (arXiv 1705.02315v5)"
WANG_V5_PROTOCOL = ("scored on the 880 boxed images under that version's protocol; figures "
                    "attributed to it, not re-checked against the paper here")
WANG_IOBB_CVPR: dict[float, tuple[float, ...]] = {
    0.1: (0.7277, 0.9931, 0.7124, 0.7886, 0.4352, 0.1645, 0.7500, 0.4591),
    0.25: (0.550, 0.979, 0.542, 0.577, 0.282, 0.051, 0.558, 0.347),
    0.5: (0.2833, 0.8767, 0.3333, 0.423, 0.141, 0.013, 0.383, 0.184),
}
WANG_IOBB_V5: dict[float, tuple[float, ...]] = {
    0.1: (0.622, 1.0, 0.797, 0.911, 0.588, 0.152, 0.858, 0.520),
    0.25: (0.394, 0.986, 0.634, 0.797, 0.459, 0.051, 0.708, 0.337),
    0.5: (0.194, 0.945, 0.418, 0.650, 0.306, 0.0, 0.483, 0.265),
}
# Chance, measured on all 984 boxes with the rule used before box limits and AFP: random
# smooth maps (7x7 uniform noise upsampled to 256 px), binarised at 60 and 180, every
# component a box. Only the pooled accuracy and Cardiomegaly's were recorded. The rule
# with a box limit is measured by bench/localization.py (bench/results/localization.md)
# and, for any model's grid, by cxrlib.localization.random_map_scores.
RANDOM_MAPS_UNLIMITED = "random smooth maps, 7x7 grid, unlimited boxes (measured chance)"
RANDOM_MAPS_UNLIMITED_POOLED: dict[float, float] = {0.1: 0.601, 0.25: 0.417, 0.5: 0.268}
RANDOM_MAPS_UNLIMITED_CARDIOMEGALY: dict[float, float] = {0.1: 1.0, 0.25: 0.925, 0.5: 0.719}
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
    """Localization figures on the release's boxes: one row per (source, T(IoBB)).

    Columns: ``source``, ``T(IoBB)``, the 8 findings, ``mean`` (over the 8, our
    arithmetic; for the random-map row the pooled accuracy over all 984 boxes), ``AFP``
    (None: not in the project's reference notes) and ``protocol``. A final row gives the
    mean box area share per finding, the pointing game's chance level.
    """
    rows = []
    for source, protocol, table in ((WANG_CVPR, WANG_CVPR_PROTOCOL, WANG_IOBB_CVPR),
                                    (WANG_V5, WANG_V5_PROTOCOL, WANG_IOBB_V5)):
        for t, values in table.items():
            rows.append({"source": source, "T(IoBB)": t, **dict(zip(WANG_FINDINGS, values)),
                         "mean": round(sum(values) / len(values), 4), "AFP": None, "protocol": protocol})
    for t, pooled in RANDOM_MAPS_UNLIMITED_POOLED.items():
        rows.append({"source": RANDOM_MAPS_UNLIMITED, "T(IoBB)": t, "Cardiomegaly": RANDOM_MAPS_UNLIMITED_CARDIOMEGALY[t],
                     "mean": pooled, "AFP": None,
                     "protocol": "all 984 boxes; pooled accuracy; no box limit, so a high accuracy costs no AFP"})
    rows.append({"source": "mean box area share (BBox_List_2017.csv)", "T(IoBB)": None,
                 **{f: BOX_AREA_SHARE[f] for f in WANG_FINDINGS}, "AFP": None,
                 "protocol": "chance level of the pointing game with no tolerance"})
    columns = ["source", "T(IoBB)", *WANG_FINDINGS, "mean", "AFP", "protocol"]
    return pd.DataFrame(rows, columns=columns)
