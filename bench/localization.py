"""Benchmark: what random maps score under Wang et al.'s localization metric, and what a trained model does.

    python bench/localization.py --part chance   # the release's boxes (4 smooth, 1 white-noise map per region)
    python bench/localization.py --part model    # the cpu profile's heatmap run on phantom lesion masks
    python bench/localization.py --draws 1 --limit 40 --part chance   # a smoke run

A heatmap's T(IoBB) accuracy means something only beside what a map without information
scores. The first part scores random maps on all 984 boxes of ``BBox_List_2017.csv``
(1024 px, each (image, finding) region once), with cxrlib.localization's own functions:

* random smooth maps: uniform noise on the CAM grid of the project's models at 224 px
  (found by building each model and reading its Grad-CAM layer's grid), upsampled as CAM
  maps are (cxrlib.cam.upsample_maps to 224 px, then to the 1024 px image);
* white noise: a 256x256 grid, one value per pixel of a 256 px map;

each scored before (every connected component a box: ``UNLIMITED_RULE``) and after the
box rule (``WANG_RULE``: 0.1% minimum component, at most 3 boxes), with the accuracy and
the average number of false-positive boxes (AFP) per finding and threshold.

The second part (:func:`model_part`) takes the profile's heatmap run, the run notebook 07
scores (found through the profile, trained when missing), and scores its heatmaps on the
phantoms' lesion masks against random maps drawn on its own CAM grid (paired bootstrap CIs
over images, described), with the verdict in words from the exact test: the pointing game of
the model's own maps against the same maps on other images' regions of the finding
(cxrlib.localization.exact). Both parts go to bench/results/localization.md;
running one part keeps the other's text from the file.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cxrlib  # noqa: F401  (must precede torchvision / timm / pytorch_grad_cam)
import pandas as pd
import torch

from cxrlib import cam, experiments, localization as loc, profiles
from cxrlib.data import load_data
from cxrlib.data.chestxray14 import read_boxes
from cxrlib.fileio import atomic_write_text
from cxrlib.labels import canonical
from cxrlib.models import create_model
from cxrlib.seed import set_seed
from _header import header_lines  # bench/_header.py: the machine line every result starts with

RESULTS = Path(__file__).resolve().parent / "results" / "localization.md"
DEFAULT_BBOX = Path(os.environ.get("CXRLIB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) \
    / "chestxray14-sample" / "BBox_List_2017.csv"
INPUT = 224
WHITE_NOISE = (256, 256)
MODELS = ("resnet18", "resnet50", "densenet121")
HEADS = (("gap", None), ("psp", None), ("fpn", None), ("gap", "multiscale"))


def cam_grids(models, size: int = INPUT) -> pd.DataFrame:
    """The Grad-CAM grid of each model x head at ``size`` px, read from a built model."""
    rows = []
    image = torch.zeros(1, size, size)
    for name in models:
        for head, wrapper in HEADS:
            model = create_model(name, head=head, wrapper=wrapper, num_classes=14, in_chans=1, pretrained=False)
            (grid,) = cam.target_grids(model, image)
            rows.append({"model": model.info.name, "CAM layer": model.info.cam_layer, "grid": grid})
    return pd.DataFrame(rows)


def box_regions(path: Path, limit: int | None) -> tuple[list, list, list]:
    """(regions, findings, image ids): one region per (image, finding), all its boxes."""
    boxes = read_boxes(path)
    regions, findings, ids = [], [], []
    for image_id in sorted(boxes):
        by_finding: dict[str, list] = {}
        for box in boxes[image_id]:
            by_finding.setdefault(canonical(box.finding), []).append(box)
        for name, items in by_finding.items():
            regions.append(items)
            findings.append(name)
            ids.append(image_id)
    if limit is not None:
        regions, findings, ids = regions[:limit], findings[:limit], ids[:limit]
    return regions, findings, ids


def chance(regions, findings, ids, grid, input_size, rule, draws, seed) -> tuple[pd.DataFrame, float]:
    """Per-finding random-map table and the mean number of boxes per map.

    The same seed draws the same maps for every rule, so before and after are paired.
    """
    shapes = [(box[0].image_size, box[0].image_size) for box in regions]
    rows = loc.random_map_scores(regions, findings, shapes, [grid], input_size, n_draws=draws, image_ids=ids,
                                 rule=rule, seed=seed)
    table = loc.summarize_scores(rows, prefix="random:")
    per_finding = table.drop(index="All", errors="ignore")
    means = per_finding.mean()
    means["n"] = int(per_finding["n"].sum())
    table.loc["mean of findings"] = means
    table["n"] = table["n"].astype(int)
    return table, float(rows["random:n_boxes"].mean())


def accuracy_afp(table: pd.DataFrame, kind: str = "iobb") -> pd.DataFrame:
    """Cells ``accuracy (AFP)`` per threshold."""
    afp = "afp" if kind == "iobb" else "afp_iou"
    out = pd.DataFrame(index=table.index)
    out["n"] = table["n"].astype(int)
    for t in loc.DEFAULT_THRESHOLDS:
        out[f"T={t:g}"] = [f"{a:.3f} ({f:.2f})" for a, f in zip(table[f"{kind}@{t:g}"], table[f"{afp}@{t:g}"])]
    return out


def markdown(df: pd.DataFrame) -> str:
    cols = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.astype(object).iterrows():
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join([str(idx), *cells]) + " |")
    return "\n".join(lines)


MODEL_SECTION = "## A trained model against random maps on phantom lesion masks"


def heatmap_run(profile_name: str = "cpu", runs_dir: str = ""):
    """The profile's heatmap run (notebook 07's ``HEAD``), trained when it is not finished yet,
    its data, and notebook 07's parameters under that profile."""
    profile = profiles.load(profile_name, runs_dir=runs_dir)
    params = profile.notebook_parameters("07_heatmaps")
    config = experiments.heatmap_config(profile, params.get("HEAD", ""))
    run = experiments.run(config)
    return config, run, load_data(config.data, progress=False), params


def model_vs_random_section(model, data, title: str, methods=("gradcam",), n_random: int = 20,
                            limit: int | None = None, n_bootstrap: int = 1000, seed: int = 0) -> str:
    """A markdown section: a model's heatmaps against random maps on its own CAM grid.

    ``data`` is a bundle that offers ground truth (phantom lesion masks, scored at the
    model's input size, or real boxes); the random maps are drawn once and shared by every
    method; the comparison is paired over images, with 95% bootstrap CIs
    (cxrlib.localization.score_heatmaps).
    """
    set_seed(seed)  # randomcam draws from NumPy's global generator
    heat = loc.score_heatmaps(model, data, methods, limit=limit, n_random=n_random, n_bootstrap=n_bootstrap,
                              seed=seed)
    lines = [title, "", f"Scored against {heat.ground_truth}: {heat.n_images} test images, {len(heat.random)} "
             f"(image, finding) regions; {n_random} random maps per region on the model's {heat.grid_text} CAM "
             f"grid, upsampled to {heat.input_size[0]} px as its heatmaps are; {n_bootstrap} bootstrap resamples "
             "of the images.", "", "Maps that give no box (flat: no positive evidence for the finding):", "",
             markdown(heat.empty_maps().assign(share=lambda f: f["share"].map("{:.0%}".format))), ""]
    for method in heat.methods:
        versus = heat.versus(method).reset_index()
        versus = versus[versus["metric"].isin(["pointing_game", "energy", *(f"{k}@{t:g}" for t in (0.1, 0.25, 0.5)
                                                                            for k in ("iobb", "afp"))])]
        versus["difference [95% CI]"] = [loc.difference_text(r) for _, r in versus.iterrows()]
        shown = versus[["finding", "metric", "n", "images", "model", "random map", "difference [95% CI]"]]
        lines += [f"### {method}", "", "```", heat.verdict(method), "```", "", markdown(shown.set_index("finding")), ""]
    return "\n".join(lines)


def model_part(args) -> str:
    started = time.perf_counter()
    config, run, data, params = heatmap_run(args.profile, args.runs_dir)
    methods = args.methods.split(",") if args.methods else list(params["METHODS"])
    n_random = args.n_random or int(params.get("N_RANDOM", 20))
    limit = args.model_limit or int(params["N_IMAGES"])
    title = "\n".join([
        MODEL_SECTION, "",
        *header_lines(f"python bench/localization.py --part model --profile {args.profile}"
                      + (f" --methods {args.methods}" if args.methods else "")
                      + (f" --n-random {args.n_random}" if args.n_random else "")
                      + (f" --model-limit {args.model_limit}" if args.model_limit else "")
                      + (f" --bootstrap {args.bootstrap}" if args.bootstrap != 1000 else "")
                      + (f" --runs-dir {args.runs_dir}" if args.runs_dir else "") + f" --seed {args.seed}"),
        "",
        f"Run: `{run.run_dir}` ({config.model.name} + {config.model.head}, {config.data.image_size} px, "
        f"{config.data.source}; found or trained through the `{args.profile}` profile exactly as notebook 07 "
        f"does), test mean AUROC {run.metrics['mean_auroc']:.3f} ({run.metrics['split']}).  ",
        "The scores do not depend on the machine's load, only the wall time does, and the run's weights "
        "depend on the processor's floating-point path.",
    ])
    text = model_vs_random_section(run.model, data, title, methods, n_random, limit, args.bootstrap, args.seed)
    print(f"model part: {time.perf_counter() - started:.0f} s", flush=True)
    return text


def chance_part(args) -> str:
    started = time.perf_counter()
    grids = cam_grids(args.models.split(","))
    regions, findings, ids = box_regions(args.bbox, args.limit)
    n_images = len(set(ids))
    cases = [(f"random smooth maps, {g[0]}x{g[1]} grid upsampled to {INPUT} px", g, (INPUT, INPUT), args.draws)
             for g in sorted(set(grids["grid"]))]
    cases.append((f"white noise, {WHITE_NOISE[0]}x{WHITE_NOISE[1]} px", WHITE_NOISE, WHITE_NOISE, args.noise_draws))
    sections = []
    summary = []
    for title, grid, size, draws in cases:
        tables, boxes = {}, {}
        for label, rule in (("before: every component a box", loc.UNLIMITED_RULE), ("after: WANG_RULE", loc.WANG_RULE)):
            t0 = time.perf_counter()
            tables[label], boxes[label] = chance(regions, findings, ids, grid, size, rule, draws, args.seed)
            print(f"{title} / {label}: {time.perf_counter() - t0:.0f} s", flush=True)
        after = tables["after: WANG_RULE"]
        for label, table in tables.items():
            pooled = table.loc["All"]
            summary.append({"maps": title, "rule": label.split(":")[0], "boxes per map": f"{boxes[label]:.1f}",
                            **{f"T(IoBB)={t:g}": f"{pooled[f'iobb@{t:g}']:.3f} ({pooled[f'afp@{t:g}']:.2f})"
                               for t in loc.DEFAULT_THRESHOLDS}})
        sections += [f"## {title}", "", f"{draws} map(s) per region.", ""]
        for label, table in tables.items():
            sections += [f"T(IoBB) accuracy (AFP), {label}:", "", markdown(accuracy_afp(table)), ""]
        sections += ["T(IoU) accuracy (AFP), after:", "", markdown(accuracy_afp(after, "iou")), "",
                     "Pointing game and energy (rule-free):", "",
                     markdown(after[["n", "pointing_game", "random_baseline", "energy"]]
                              .rename(columns={"random_baseline": "area share (its chance)"})), ""]
    elapsed = time.perf_counter() - started
    summary_df = pd.DataFrame(summary).set_index("maps")
    return "\n".join([
        "# Localization: what random maps score on the release's boxes",
        "",
        *header_lines(f"python bench/localization.py --part chance --draws {args.draws} "
                      f"--noise-draws {args.noise_draws}" + (f" --limit {args.limit}" if args.limit else "")
                      + (f" --models {args.models}" if args.models != ",".join(MODELS) else "")
                      + f" --seed {args.seed}", extra=f"wall time {elapsed / 60:.1f} min"),
        "",
        f"Ground truth: {len(regions)} (image, finding) regions, {sum(len(r) for r in regions)} boxes on "
        f"{n_images} images, `{args.bbox.name}`, 1024 px; random maps per region: {args.draws} smooth, "
        f"{args.noise_draws} white noise; "
        f"accuracy = share of regions with a predicted box whose IoBB (IoU) > T; AFP = mean number "
        f"of predicted boxes per region whose IoBB (IoU) <= T.",
        "",
        "Random smooth maps: uniform noise on the grid below, through `cxrlib.cam.upsample_maps` to "
        f"{INPUT} px, then resized to 1024 px as `score_heatmaps` resizes a heatmap for real "
        "boxes. White noise: one uniform value per pixel of a 256 px map. Rules: before = Wang et al.'s "
        "two levels (60, 180) with every 8-connected component a box (`UNLIMITED_RULE`); after = "
        "`WANG_RULE` (components of at least 0.1% of the map, at most 3 boxes per map, largest first).",
        "",
        "Grad-CAM grids of the project's models at 224 px (built with random weights; the grid "
        "depends only on the architecture):",
        "",
        markdown(grids.assign(grid=[f"{g[0]}x{g[1]}" for g in grids["grid"]]).set_index("model")),
        "",
        "## Summary: pooled accuracy (AFP) over all regions",
        "",
        "For scale (the project's reference notes): Wang et al., CVPR 2017, Table 4, ResNet-50, mean "
        "over the 8 findings 0.629 / 0.486 / 0.330 at T(IoBB) = 0.1 / 0.25 / 0.5, scored on the 880 "
        "boxed images under that version's protocol (it shuffled the whole dataset).",
        "",
        markdown(summary_df),
        "",
        *sections,
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("all", "chance", "model"), default="all",
                    help="chance: random maps on the release's boxes; model: the profile's heatmap run against "
                         "random maps; the other part of an existing results file is kept")
    ap.add_argument("--bbox", type=Path, default=DEFAULT_BBOX, help="BBox_List_2017.csv of the release")
    ap.add_argument("--draws", type=int, default=4, help="random smooth maps per (image, finding) region")
    ap.add_argument("--noise-draws", type=int, default=1,
                    help="white-noise maps per region (slow under the old rule: thousands of boxes each)")
    ap.add_argument("--limit", type=int, default=None, help="score only the first N regions (smoke runs)")
    ap.add_argument("--models", default=",".join(MODELS), help="models whose CAM grids are scored")
    ap.add_argument("--profile", default="cpu", help="model part: the profile whose heatmap run is scored")
    ap.add_argument("--runs-dir", default="", help="model part: where that run is found or trained (default: "
                                                     "the profile's runs folder)")
    ap.add_argument("--methods", default="", help="model part: CAM methods, comma-separated (default: the "
                                                  "profile's notebook 07 METHODS)")
    ap.add_argument("--n-random", type=int, default=0, help="model part: random maps per region (default: "
                                                             "the profile's N_RANDOM)")
    ap.add_argument("--model-limit", type=int, default=0, help="model part: test images scored (default: the "
                                                                "profile's N_IMAGES)")
    ap.add_argument("--bootstrap", type=int, default=1000, help="model part: bootstrap resamples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (resizing maps)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.part in ("all", "chance") and not args.bbox.is_file():
        print(f"{args.bbox} not found: pass --bbox path/to/BBox_List_2017.csv (from the NIH release)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    kept = args.out.read_text().split(MODEL_SECTION) if args.out.is_file() else ["", ""]
    kept = kept if len(kept) == 2 else [kept[0], ""]
    chance_text = chance_part(args) if args.part in ("all", "chance") else kept[0].rstrip()
    model_text = model_part(args) if args.part in ("all", "model") else (MODEL_SECTION + kept[1]).rstrip()
    if not chance_text:
        print(f"{args.out} holds no chance part yet: run with --part all or --part chance", file=sys.stderr)
    text = "\n\n".join(t for t in (chance_text, model_text if model_text != MODEL_SECTION else "") if t)
    atomic_write_text(text + "\n", args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
