"""Screenshots of the exported report in headless Chromium, to check that it renders.

    python bench/screenshot_report.py [--reports reports] [--notebook 13_results]

Opens ``reports/index.html`` and one notebook's HTML in Debian's ``chromium`` (no display,
no network, a fresh profile folder) and saves full-width PNGs under
``reports/screenshots/``. Look at them: figures must show, tables must be readable.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--virtual-time-budget=5000",
]


def find_chromium(explicit: str | None = None) -> str:
    for name in ([explicit] if explicit else []) + ["chromium", "chromium-browser", "google-chrome"]:
        path = shutil.which(name) if name else None
        if path:
            return path
    raise SystemExit("no Chromium found: install Debian's package (apt-get install -y chromium) or pass --chromium")


def screenshot(chromium: str, page: Path, png: Path, width: int, height: int, timeout: float = 120) -> Path:
    """One page -> one PNG of ``width`` x ``height`` pixels (the top of the page)."""
    if not page.is_file():
        raise SystemExit(f"{page} does not exist: run `python -m cxrlib report` first")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cxrlib-chromium-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
               f"--window-size={width},{height}", page.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not png.is_file():
        raise SystemExit(f"chromium failed on {page} (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", default="reports", help="the report's output folder (default: reports)")
    parser.add_argument("--notebook", default=None,
                        help="stem of the notebook page to capture (default: 13_results, else the first page)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=2400)
    parser.add_argument("--chromium", default=None, help="path to the Chromium binary")
    args = parser.parse_args(argv)

    reports = Path(args.reports)
    chromium = find_chromium(args.chromium)
    pages = sorted(p for p in reports.glob("[0-9][0-9]_*.html"))
    if args.notebook:
        notebook = reports / f"{args.notebook}.html"
    elif (reports / "13_results.html").is_file():
        notebook = reports / "13_results.html"
    elif pages:
        notebook = pages[0]
    else:
        raise SystemExit(f"no notebook pages in {reports}: run `python -m cxrlib report` first")
    out = reports / "screenshots"
    for page in (reports / "index.html", notebook):
        png = screenshot(chromium, page, out / f"{page.stem}.png", args.width, args.height)
        print(f"{page} -> {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
