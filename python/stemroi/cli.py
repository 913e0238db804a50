"""The ``stemroi`` command line: ``train``, ``detect``, ``demo``."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stemroi", description="Regions of interest in atomic-resolution STEM images")
    p.add_argument("--version", action="version", version=f"stemroi {__import__('stemroi').__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the main job on a synthetic STEM image (offline)")
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument("--size", type=int, default=768, help="synthetic image size in pixels")
    demo.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        run_demo(out=args.out, size=args.size, seed=args.seed)
        return 0
    return 2  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
