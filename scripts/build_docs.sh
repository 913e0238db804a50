#!/usr/bin/env bash
# Build the documentation site into build/docs-html with warnings as errors,
# then (unless --no-screenshots) take screenshots of three of its pages in a
# headless Chromium into build/docs-screenshots.
#   STEMROI_PYTHON   interpreter with stemroi and Sphinx (default: ./.venv/bin/python)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${STEMROI_PYTHON:-$root/.venv/bin/python}"
screenshots=1
for arg in "$@"; do
  case "$arg" in
    --no-screenshots) screenshots=0 ;;
    *) echo "usage: $0 [--no-screenshots]" >&2; exit 2 ;;
  esac
done
out="$root/build/docs-html"
# -E: read every source again (the API pages are regenerated from the code on each build)
"$py" -m sphinx -b html -W --keep-going -E -q -j 1 \
  -d "$root/build/docs-doctrees" docs "$out"
echo "docs: $out/index.html"
if ((screenshots)); then
  "$py" scripts/docs_screenshots.py --html "$out" --out "$root/build/docs-screenshots"
fi
