"""Labels, patients, follow-ups and the patient-wise split of the phantoms (no rendering).

Labels follow ChestX-ray14's statistics. The number of images per patient comes from its
empirical histogram (capped); whether an image has any finding from the real share of
images with findings among patients with that many images (patients with more images are
sicker: 0.27 with one image, 0.57 with ten or more), shifted so that the overall share is
the table's 0.46; which findings, from the empirical distribution of the 800 label
combinations with findings (so prevalences and co-occurrences match in expectation). A
follow-up keeps the previous label set (and lesions, at the same place) with probability
``PhantomSpec.followup_keep``: so a patient-wise split matters.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

from cxrlib.labels import FINDINGS, NUM_FINDINGS
from cxrlib.phantoms.spec import SYNTHETIC_NOTICE, PhantomSpec, check_int, check_spec
from cxrlib.seed import derive_seed

# Fixed tags, so that the random streams for different purposes never coincide.
TAG_PATIENTS, TAG_ANATOMY, TAG_IMAGE, TAG_LESION, TAG_SPLIT = 7101, 7102, 7103, 7104, 7105
# Nuisance streams: each knob draws from its own, so that turning one off changes nothing else.
TAG_HABITUS, TAG_INSPIRATION, TAG_COLLIMATION, TAG_MARKERS, TAG_DEVICES, TAG_CONFOUNDER = (
    7106, 7107, 7108, 7109, 7110, 7111)
TAG_VIEW = 7112  # the optional AP/PA confound (PhantomSpec.ap_confound)
_PATIENTS_PER_CHUNK = 1024


def phantom_image_id(index: int) -> str:
    """The image id of phantom ``index``: ``phantom_00000123.png``."""
    return f"phantom_{int(index):08d}.png"


def phantom_index(image_id: str) -> int:
    """The index of the phantom named ``image_id`` (the inverse of :func:`phantom_image_id`)."""
    name = str(image_id)
    digits = name[len("phantom_"):-len(".png")]
    if not (name.startswith("phantom_") and name.endswith(".png") and digits.isdigit()):
        raise ValueError(f"{name!r} is not a phantom image id (expected phantom_<8 digits>.png)")
    return int(digits)


def _combo_table() -> tuple[np.ndarray, np.ndarray]:
    masks, counts = [], []
    for item in _CXR14_LABEL_COMBOS.split():
        m, c = item.split(":")
        masks.append(int(m, 16))
        counts.append(int(c))
    return np.array(masks, dtype=np.int64), np.array(counts, dtype=np.float64)


def _capped_sizes(cap: int) -> np.ndarray:
    """Patients with 1 .. cap images (ChestX-ray14's histogram, the tail piled up at the cap)."""
    hist = _CXR14_IMAGES_PER_PATIENT[:cap].astype(np.float64).copy()
    hist[cap - 1] += _CXR14_IMAGES_PER_PATIENT[cap:].sum()
    return hist


@functools.lru_cache(maxsize=64)
def sick_probability(cap: int, pattern: float = 1.0) -> np.ndarray:
    """P(any finding) of an image whose patient has 1 .. cap images (``[cap]``).

    ChestX-ray14's per-image shares (the capped bucket pools every larger patient), their
    log-odds scaled by ``pattern`` (1 = real, 0 = flat), then shifted so that the share over
    all images of the capped cohort is the table's overall share.
    """
    sizes = np.arange(1, cap + 1)
    images, sick = _CXR14_IMAGES_BY_SIZE.astype(np.float64), _CXR14_SICK_BY_SIZE.astype(np.float64)
    top = min(cap, len(images)) - 1  # buckets beyond the table's last one pool with it
    p = np.empty(cap)
    p[:top] = sick[:top] / images[:top]
    p[top:] = sick[top:].sum() / images[top:].sum()
    target = sick.sum() / images.sum()
    logit = np.log(p / (1 - p))
    base = math.log(target / (1 - target))
    logit = base + pattern * (logit - base)
    weight = _capped_sizes(cap) * sizes  # images per bucket
    lo, hi = -5.0, 5.0
    for _ in range(60):  # bisection on the shift: the share is increasing in it
        mid = (lo + hi) / 2
        share = (weight / (1 + np.exp(-(logit + mid)))).sum() / weight.sum()
        lo, hi = (mid, hi) if share < target else (lo, mid)
    return 1 / (1 + np.exp(-(logit + (lo + hi) / 2)))


@functools.lru_cache(maxsize=4096)
def _chunk(seed: int, chunk: int, cap: int, keep: float, pattern: float) -> dict[str, np.ndarray]:
    """Patients ``chunk*1024 ...`` and their images: sizes, label sets, lesion episodes."""
    rng = np.random.default_rng(derive_seed(seed, TAG_PATIENTS, chunk))
    hist = _capped_sizes(cap)
    sizes = rng.choice(np.arange(1, cap + 1), size=_PATIENTS_PER_CHUNK, p=hist / hist.sum())
    n = int(sizes.sum())
    patient = np.repeat(np.arange(_PATIENTS_PER_CHUNK), sizes) + chunk * _PATIENTS_PER_CHUNK
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    follow_up = np.arange(n) - np.repeat(starts, sizes)
    # Whether an image has findings depends on how many images its patient has; which
    # findings it has does not (ChestX-ray14's combinations among images with findings).
    p_sick = sick_probability(cap, pattern)[sizes - 1]
    sick = rng.random(n) < np.repeat(p_sick, sizes)
    which = np.minimum(np.searchsorted(_SICK_CDF, rng.random(n), side="right"), len(_SICK_COMBOS) - 1)
    fresh = np.where(sick, _SICK_COMBOS[which], _NO_FINDING_COMBO)
    redraw = (rng.random(n) >= keep) | (follow_up == 0)
    # episode = follow-up number of the last fresh draw: the lesions of a kept label set
    # stay where they were, because lesion geometry is seeded by (patient, episode).
    episode = np.where(redraw, follow_up, 0)
    for i in np.flatnonzero(~redraw):  # sequential: a kept set chains back to its draw
        episode[i] = episode[i - 1]
    combo = fresh[starts.repeat(sizes) + episode]
    bits = _COMBO_MASKS[combo]
    labels = ((bits[:, None] >> np.arange(NUM_FINDINGS)) & 1).astype(np.uint8)
    return {"patient": patient, "follow_up": follow_up, "episode": episode, "labels": labels}


def phantom_rows(seed: int, stop: int, spec: PhantomSpec, start: int = 0) -> dict[str, np.ndarray]:
    """Table rows ``start:stop`` (images are numbered across chunks in order)."""
    parts, first, chunk = [], 0, 0
    while first < stop:
        c = _chunk(seed, chunk, spec.max_images_per_patient, float(spec.followup_keep),
                   float(spec.sickness_pattern))
        n = len(c["patient"])
        if first + n > start:
            lo, hi = max(start - first, 0), min(stop - first, n)
            parts.append({k: v[lo:hi] for k, v in c.items()})
        first += n
        chunk += 1
    if not parts:
        return {"patient": np.zeros(0, int), "follow_up": np.zeros(0, int), "episode": np.zeros(0, int),
                "labels": np.zeros((0, NUM_FINDINGS), np.uint8)}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def phantom_table(n: int, seed: int = 0, spec: PhantomSpec | None = None) -> pd.DataFrame:
    """Labels and patients of the first ``n`` synthetic phantoms, without rendering.

    Columns: image_id (``phantom_00000123.png``), patient_id (int), the 14 findings (0/1,
    FINDINGS order). A table of n rows is the first n rows of any larger one (same seed and
    spec). ``attrs``: synthetic=True, description, seed.
    """
    n = check_int(n, "n", 0, 10_000_000)
    seed = check_int(seed, "seed", 0)
    spec = check_spec(spec)
    rows = phantom_rows(seed, n, spec)
    df = pd.DataFrame({"image_id": [phantom_image_id(i) for i in range(n)],
                       "patient_id": rows["patient"].astype(np.int64)})
    for k, name in enumerate(FINDINGS):
        df[name] = rows["labels"][:, k].astype(np.int64)
    df.attrs.update(synthetic=True, description=SYNTHETIC_NOTICE, seed=seed)
    return df


def phantom_follow_ups(n: int, seed: int = 0, spec: PhantomSpec | None = None) -> np.ndarray:
    """``int64 [n]``: each of the first ``n`` phantoms' follow-up number (0 for a patient's first image)."""
    n = check_int(n, "n", 0, 10_000_000)
    return phantom_rows(check_int(seed, "seed", 0), n, check_spec(spec))["follow_up"].astype(np.int64)


def phantom_split(table: pd.DataFrame, seed: int = 0) -> dict[str, np.ndarray]:
    """Patient-wise 70/10/20 train/val/test split: row positions (sorted int arrays).

    Patients are shuffled with ``seed`` and assigned in turn until a part holds its share of
    the images; no patient is in two parts.
    """
    if not isinstance(table, pd.DataFrame) or "patient_id" not in table.columns:
        raise ValueError("phantom_split: expected a DataFrame with a patient_id column (from phantom_table)")
    seed = check_int(seed, "seed", 0)
    patients = table["patient_id"].to_numpy()
    unique, inverse, counts = np.unique(patients, return_inverse=True, return_counts=True)
    order = np.random.default_rng(derive_seed(seed, TAG_SPLIT)).permutation(len(unique))
    share = np.cumsum(counts[order]) / max(len(patients), 1)
    # A patient goes to the part in which its first image falls (by cumulative share).
    start = share - counts[order] / max(len(patients), 1)
    part_of = np.empty(len(unique), dtype=np.int64)
    part_of[order] = np.where(start < 0.7 - 1e-9, 0, np.where(start < 0.8 - 1e-9, 1, 2))
    row_part = part_of[inverse]
    return {name: np.flatnonzero(row_part == i) for i, name in enumerate(("train", "val", "test"))}


# --------------------------------------------------------------------------------------
# ChestX-ray14 statistics, computed once from the full NIH Data_Entry_2017_v2020.csv
# (112,120 images, 30,805 patients; ../shared/data/chestxray14-sample in this project).
# --------------------------------------------------------------------------------------

_CXR14_N_IMAGES = 112120

# Positive images per finding (FINDINGS order) and pairwise co-occurrence counts (the
# diagonal repeats the positives). Prevalence = count / 112,120.
_CXR14_POSITIVES = np.array([11559, 2776, 13317, 19894, 5782, 6331, 1431, 5302, 4667, 2303, 2516, 1686, 3385, 227])
CXR14_PREVALENCE = _CXR14_POSITIVES / _CXR14_N_IMAGES
CXR14_COOCCURRENCE = np.array([
    [11559, 370, 3275, 3264, 739, 590, 262, 774, 1223, 221, 424, 220, 496, 40],
    [370, 2776, 1063, 587, 102, 108, 41, 49, 169, 127, 44, 52, 111, 7],
    [3275, 1063, 13317, 4000, 1254, 912, 269, 996, 1287, 593, 359, 188, 849, 21],
    [3264, 587, 4000, 19894, 1159, 1546, 605, 946, 1221, 981, 449, 345, 750, 33],
    [739, 102, 1254, 1159, 5782, 906, 71, 431, 610, 129, 215, 117, 452, 25],
    [590, 108, 912, 1546, 906, 6331, 70, 341, 428, 131, 115, 166, 411, 10],
    [262, 41, 269, 605, 71, 70, 1431, 41, 123, 340, 23, 11, 48, 3],
    [774, 49, 996, 946, 431, 341, 41, 5302, 223, 33, 747, 80, 289, 9],
    [1223, 169, 1287, 1221, 610, 428, 123, 223, 4667, 162, 103, 79, 251, 4],
    [221, 127, 593, 981, 129, 131, 340, 33, 162, 2303, 30, 9, 64, 3],
    [424, 44, 359, 449, 215, 115, 23, 747, 103, 30, 2516, 36, 151, 4],
    [220, 52, 188, 345, 117, 166, 11, 80, 79, 9, 36, 1686, 176, 8],
    [496, 111, 849, 750, 452, 411, 48, 289, 251, 64, 151, 176, 3385, 8],
    [40, 7, 21, 33, 25, 10, 3, 9, 4, 3, 4, 8, 8, 227],
])  # fmt: skip

# Images per patient: patients with 1, 2, ..., 10 images, then all with more than 10.
# The last bucket (more than 10) is counted at 11 images; PhantomSpec's cap piles the tail
# beyond the cap onto the cap.
_CXR14_IMAGES_PER_PATIENT = np.zeros(200, dtype=np.int64)
_CXR14_IMAGES_PER_PATIENT[:11] = [17503, 4113, 2100, 1330, 938, 787, 608, 494, 387, 320, 2225]

# Images, and images with any finding, among patients with 1, 2, ..., 10 images, then among
# all patients with more than 10 (per-image shares 0.269, 0.326, ... 0.460, then 0.580).
_CXR14_IMAGES_BY_SIZE = np.array([17503, 8226, 6300, 5320, 4690, 4722, 4256, 3952, 3483, 3200, 50468])
_CXR14_SICK_BY_SIZE = np.array([4715, 2685, 2359, 2118, 1961, 2069, 1821, 1747, 1559, 1471, 29254])

# Every label combination of the table as "<bitmask in hex>:<images>" (bit k = FINDINGS[k];
# 0 = No Finding). Sampling whole combinations reproduces prevalence and co-occurrence.
_CXR14_LABEL_COMBOS = """
0:60361 8:9547 1:4215 4:3955 20:2705 80:2194 10:2139 c:1604 9:1350 100:1310 5:1167 1000:1126
2:1093 400:892 28:829 d:739 800:727 200:628 6:484 108:441 18:420 84:403 14:402 101:398
30:396 208:392 88:347 104:337 480:337 40:322 1004:251 24:250 81:241 1008:210 a:201 21:201
105:200 48:199 204:189 808:185 90:179 11:178 110:151 1020:141 248:138 10c:134 1010:132
a0:130 120:128 20c:127 408:126 e:120 401:117 1001:117 2000:110 41:108 2c:106 109:104 801:104
1c:99 85:99 404:96 3:88 8c:88 240:83 10d:81 1080:79 15:72 89:72 488:72 100c:71 1800:70 7:68
19:67 38:67 410:66 820:66 34:65 114:65 804:59 29:57 f:54 44:54 481:54 180:49 300:49 201:48
128:47 484:47 1005:47 1100:46 1400:46 1009:45 8d:44 25:43 4c:42 118:42 100d:41 102:40 409:40
1d:38 1014:38 115:37 140:36 202:35 209:35 49:34 111:34 810:34 1006:34 1084:34 b:31 a8:31
228:31 1024:31 490:30 1030:30 420:29 1028:29 124:28 220:28 489:27 405:26 308:25 1018:25
31:24 94:24 130:24 20d:24 40c:24 900:24 45:23 181:23 218:23 880:23 22:22 3c:22 106:22 184:22
205:22 1088:22 2d:21 24c:21 809:21 2001:21 188:20 4a0:20 500:20 1108:20 60:19 244:19 402:19
12:18 4d:18 b0:18 206:18 210:18 40d:18 1081:18 102c:17 91:16 121:16 135:16 418:16 80c:16
828:16 101c:16 1101:16 1808:16 1820:16 26:15 35:15 98:15 a4:15 11c:15 12c:15 141:15 214:15
411:15 485:15 805:15 1090:15 1200:15 2008:15 2010:15 16:14 1002:14 138:13 13d:13 148:13
600:13 c00:13 1404:13 1480:13 10a:12 10f:12 48c:12 1021:12 2e:11 50:11 68:11 134:11 304:11
830:11 1040:11 1104:11 1115:11 ac:10 b4:10 103:10 119:10 20a:10 20e:10 224:10 414:10 501:10
580:10 806:10 884:10 1019:10 110c:10 1110:10 120c:10 3d:9 58:9 82:9 9c:9 a1:9 107:9 125:9
22c:9 305:9 406:9 888:9 908:9 1034:9 1105:9 39:8 42:8 b8:8 10e:8 144:8 230:8 428:8 581:8
814:8 821:8 1038:8 103c:8 1801:8 1804:8 2a:7 46:7 a9:7 13c:7 185:7 190:7 802:7 819:7 1011:7
111d:7 1408:7 1880:7 1900:7 2f:6 70:6 9d:6 a5:6 c8:6 1a0:6 249:6 258:6 280:6 301:6 498:6
803:6 80a:6 920:6 100a:6 100f:6 1089:6 10a0:6 110d:6 1118:6 1120:6 1130:6 1248:6 1488:6
2020:6 61:5 99:5 c0:5 11d:5 14c:5 18c:5 18d:5 30c:5 424:5 430:5 440:5 486:5 505:5 508:5
818:5 840:5 100e:5 1015:5 1025:5 1085:5 1094:5 140c:5 1410:5 2004:5 2081:5 17:4 1e:4 27:4
8a:4 8e:4 95:4 ad:4 c4:4 10b:4 129:4 149:4 194:4 21c:4 22a:4 250:4 2c8:4 30d:4 314:4 31c:4
349:4 491:4 4a8:4 4a9:4 509:4 510:4 51d:4 648:4 905:4 c80:4 1007:4 101d:4 1029:4 1048:4
104c:4 10ac:4 1134:4 1401:4 1405:4 1489:4 1910:4 2005:4 1f:3 36:3 43:3 54:3 6c:3 86:3 c5:3
117:3 136:3 142:3 145:3 189:3 198:3 203:3 207:3 212:3 219:3 221:3 229:3 234:3 24a:3 24d:3
24e:3 260:3 302:3 306:3 348:3 416:3 499:3 50d:3 5a4:3 80d:3 80e:3 811:3 838:3 901:3 928:3
1003:3 1012:3 1027:3 1031:3 108c:3 108d:3 10a4:3 1114:3 1119:3 1121:3 1415:3 1420:3 1484:3
1500:3 1810:3 1818:3 1824:3 1888:3 1a:2 3a:2 47:2 4a:2 51:2 5c:2 87:2 8f:2 96:2 cc:2 116:2
12d:2 131:2 139:2 154:2 159:2 191:2 21d:2 225:2 22e:2 236:2 264:2 284:2 2c5:2 30f:2 318:2
328:2 341:2 415:2 419:2 421:2 441:2 449:2 482:2 48d:2 48e:2 494:2 4a1:2 4a4:2 4c0:2 515:2
588:2 604:2 680:2 816:2 81d:2 822:2 826:2 82c:2 844:2 881:2 890:2 8a0:2 910:2 921:2 980:2
a00:2 a1c:2 1016:2 1026:2 102d:2 103d:2 1049:2 105c:2 1091:2 1098:2 10b8:2 10bd:2 1102:2
111f:2 1128:2 1135:2 1148:2 1188:2 1198:2 1208:2 1209:2 1240:2 124c:2 1307:2 1409:2 1421:2
1481:2 148c:2 1805:2 180e:2 1830:2 1886:2 2002:2 2006:2 2009:2 200c:2 2018:2 2021:2 2080:2
2100:2 2800:2 3000:2 1b:1 32:1 37:1 4e:1 4f:1 59:1 5e:1 62:1 64:1 6a:1 71:1 74:1 78:1 7c:1
83:1 8b:1 9f:1 aa:1 b1:1 bc:1 cd:1 d4:1 f0:1 112:1 11e:1 11f:1 122:1 12e:1 137:1 13e:1 146:1
14d:1 14f:1 150:1 151:1 160:1 161:1 168:1 170:1 187:1 196:1 19c:1 19d:1 1a5:1 1a8:1 1b0:1
1b1:1 1b4:1 1b5:1 1bd:1 1c0:1 1d0:1 20b:1 20f:1 211:1 222:1 226:1 235:1 238:1 241:1 245:1
246:1 25c:1 268:1 26f:1 278:1 288:1 28c:1 28f:1 294:1 295:1 298:1 2a0:1 2c0:1 2d8:1 303:1
309:1 30a:1 30e:1 317:1 31f:1 320:1 334:1 33f:1 344:1 345:1 34d:1 380:1 384:1 3c1:1 40e:1
41c:1 42c:1 434:1 43c:1 448:1 44c:1 493:1 495:1 4ac:1 4b0:1 4c1:1 4c9:1 4d0:1 504:1 50c:1
514:1 528:1 52d:1 538:1 540:1 582:1 584:1 585:1 589:1 590:1 591:1 595:1 5a5:1 601:1 60c:1
61c:1 61d:1 621:1 658:1 681:1 688:1 690:1 807:1 80f:1 81c:1 824:1 827:1 829:1 82d:1 834:1
839:1 848:1 868:1 882:1 885:1 893:1 8a9:1 909:1 914:1 915:1 91d:1 925:1 960:1 a08:1 a0e:1
a18:1 a38:1 c01:1 c06:1 c08:1 c09:1 c10:1 c11:1 c21:1 c34:1 c88:1 c91:1 c94:1 ca4:1 ca9:1
d35:1 1017:1 101f:1 103e:1 1044:1 1058:1 1060:1 107c:1 1086:1 109c:1 10a1:1 10a8:1 10b4:1
1106:1 1107:1 1109:1 110e:1 1111:1 1117:1 111c:1 111e:1 1129:1 112d:1 112f:1 1131:1 1136:1
1138:1 113d:1 117c:1 1180:1 1181:1 1184:1 1189:1 118c:1 118d:1 1190:1 1191:1 11a1:1 11b1:1
11bc:1 1201:1 1202:1 1204:1 1206:1 120d:1 120f:1 1210:1 1211:1 1228:1 1229:1 122d:1 1238:1
1244:1 125e:1 12c4:1 12c8:1 1300:1 1305:1 1306:1 1311:1 1336:1 1348:1 137d:1 140d:1 1414:1
1418:1 1424:1 142c:1 1430:1 1438:1 1448:1 1485:1 148d:1 1491:1 1499:1 14a0:1 14a8:1 14b0:1
1511:1 1528:1 15a8:1 15b1:1 1803:1 1807:1 1809:1 180c:1 1814:1 1828:1 1834:1 184c:1 1884:1
18ac:1 1905:1 190d:1 1918:1 191d:1 1934:1 19bd:1 1c01:1 1c90:1 1ca1:1 200a:1 200d:1 2011:1
2012:1 2014:1 2028:1 2044:1 2048:1 2088:1 20b9:1 2110:1 2148:1 220c:1 220d:1 2400:1 2801:1
2808:1 2810:1 2a06:1 2c10:1 3001:1 3004:1 3008:1 3014:1 3400:1 3c08:1
"""

_COMBO_MASKS, _COMBO_COUNTS = _combo_table()
_NO_FINDING_COMBO = int(np.flatnonzero(_COMBO_MASKS == 0)[0])
_SICK_COMBOS = np.flatnonzero(_COMBO_MASKS != 0)
_SICK_CDF = np.cumsum(_COMBO_COUNTS[_SICK_COMBOS]) / _COMBO_COUNTS[_SICK_COMBOS].sum()
