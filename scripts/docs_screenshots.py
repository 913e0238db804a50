"""Screenshots of the built documentation in a headless Chromium.

Captures the landing page, the API page of ``PatchClassifier`` and one study
notebook page of a site built by ``scripts/build_docs.sh``, as PNGs that a
person (or a reviewer of the CI artefacts) looks at to check that the pages
render: theme and sidebar, API signatures and parameters, notebook cells and
figures.

    python scripts/docs_screenshots.py [--html build/docs-html] [--out build/docs-screenshots]

Needs Debian's ``chromium`` (``apt-get install chromium``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# screenshot name -> page of the built site
PAGES = {
    "landing": "index.html",
    "api_patchclassifier": "api/generated/stemroi.models.PatchClassifier.html",
    "notebook": "notebooks/cdte_vgg16_study.html",
}
WINDOW = "1280,1600"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("docs_screenshots: no chromium on PATH (Debian: apt-get install chromium)")


def screenshot(browser: str, page: Path, png: Path, timeout: float = 120.0) -> None:
    """Render ``page`` (a local HTML file) to ``png`` at a 1280 x 1600 window."""
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="stemroi-chromium-") as profile:
        cmd = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            f"--user-data-dir={profile}", f"--window-size={WINDOW}",
            # the page's MathJax comes from a CDN; offline, give up on it quickly
            "--virtual-time-budget=5000",
            f"--screenshot={png}", page.resolve().as_uri(),
        ]
        env = dict(os.environ, HOME=profile)  # chromium writes its crash and cache folders under HOME
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0 or not png.is_file() or png.read_bytes()[:8] != PNG_MAGIC:
        raise SystemExit(f"docs_screenshots: chromium failed on {page} (exit {proc.returncode}):\n"
                         f"{proc.stderr[-2000:]}")
    check_rendered(png)


def check_rendered(png: Path) -> None:
    """Fail on a blank capture (a page that did not render is one flat colour)."""
    from PIL import Image

    with Image.open(png) as im:
        grey = im.convert("L")
        size = grey.size
        lo, hi = grey.getextrema()
        colours = len(grey.getcolors(maxcolors=256) or [])
    expected = tuple(int(v) for v in WINDOW.split(","))
    if size != expected:
        raise SystemExit(f"docs_screenshots: {png} is {size[0]}x{size[1]}, expected {expected[0]}x{expected[1]}")
    if hi - lo < 128 or colours < 16:
        raise SystemExit(f"docs_screenshots: {png} looks blank (grey levels {lo}..{hi}, {colours} distinct)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, default=ROOT / "build" / "docs-html", help="built site")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "docs-screenshots", help="PNG folder")
    args = parser.parse_args(argv)
    browser = find_chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rel in PAGES.items():
        page = args.html / rel
        if not page.is_file():
            raise SystemExit(f"docs_screenshots: {page} is missing (build the site first: scripts/build_docs.sh)")
        png = args.out / f"{name}.png"
        screenshot(browser, page, png)
        print(f"docs_screenshots: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
