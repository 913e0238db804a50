"""The documentation site builds with no warnings, and its key pages render.

Builds docs/ with Sphinx exactly as scripts/build_docs.sh does (``-W
--keep-going``: any warning fails) into a temporary folder, then checks the
pages a reader lands on: the index, the API page of PatchClassifier, a page
per notebook, the gallery, and a page per curated top-level name. When
Debian's chromium is installed, the landing, API and notebook pages are also
rendered in it (scripts/docs_screenshots.py) and must not come out blank.
Skipped when Sphinx and the extensions of docs/conf.py are not installed
(the PyPI lane); scripts/setup.sh installs them in the Debian lane.
"""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTENSIONS = ("sphinx", "myst_parser", "nbsphinx", "furo")


def _require_sphinx():
    missing = [m for m in EXTENSIONS if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"documentation tools not installed: {', '.join(missing)} "
                    "(Debian: python3-sphinx python3-myst-parser python3-nbsphinx furo)")
    if shutil.which("pandoc") is None:
        pytest.skip("pandoc not installed (nbsphinx converts the notebooks' Markdown with it)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    _require_sphinx()
    out = tmp_path_factory.mktemp("docs")
    html = out / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-E", "-q",
         "-d", str(out / "doctrees"), str(ROOT / "docs"), str(html)],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    return proc, html


def test_build_has_no_warnings(site):
    proc, html = site
    assert proc.returncode == 0, f"sphinx failed:\n{proc.stderr[-6000:]}"
    problems = [line for line in proc.stderr.splitlines() if re.search(r"WARNING|ERROR|CRITICAL", line)]
    assert problems == []
    assert (html / "index.html").is_file()


def test_api_page_of_patch_classifier(site):
    _, html = site
    page = (html / "api" / "generated" / "stemroi.models.PatchClassifier.html").read_text(encoding="utf-8")
    assert 'id="stemroi.models.PatchClassifier"' in page
    for method in ("fit", "predict", "predict_proba", "save", "load"):
        assert f'id="stemroi.models.PatchClassifier.{method}"' in page, method
    # the numpydoc Parameters section became a parameter list
    assert "patch_contrast" in page and "validation_fraction" in page


def test_every_top_level_name_links_to_its_page(site):
    import stemroi

    _, html = site
    top = (html / "api" / "stemroi.html").read_text(encoding="utf-8")
    for name, package in stemroi._EXPORTS.items():
        target = f"generated/stemroi.{package}.{name}.html"
        assert (html / "api" / target).is_file(), name
        assert f'href="{target}#stemroi.{package}.{name}"' in top, name


def test_every_subpackage_lists_its_all(site):
    import importlib

    _, html = site
    for package in ("io", "preprocessing", "features", "decomposition", "cluster", "models",
                    "model_selection", "detection", "metrics", "plotting"):
        module = importlib.import_module(f"stemroi.{package}")
        page = (html / "api" / f"stemroi.{package}.html").read_text(encoding="utf-8")
        for name in module.__all__:
            assert (html / "api" / "generated" / f"stemroi.{package}.{name}.html").is_file(), (package, name)
            assert f"stemroi.{package}.{name}.html" in page, (package, name)


def test_notebooks_and_examples_have_pages(site):
    _, html = site
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for nb in notebooks:
        page = html / "notebooks" / f"{nb.stem}.html"
        assert page.is_file(), nb.name
        assert 'class="nbinput' in page.read_text(encoding="utf-8"), nb.name  # code cells rendered
    gallery = (html / "examples" / "index.html").read_text(encoding="utf-8")
    for script in sorted((ROOT / "examples").glob("*.py")):
        assert f'id="{script.stem.replace("_", "-")}-py"' in gallery, script.name


def test_pages_render_in_headless_chromium(site, tmp_path):
    proc, html = site
    assert proc.returncode == 0
    if shutil.which("chromium") is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    shots = tmp_path / "shots"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs_screenshots.py"),
                          "--html", str(html), "--out", str(shots)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(p.name for p in shots.glob("*.png")) == ["api_patchclassifier.png", "landing.png", "notebook.png"]
