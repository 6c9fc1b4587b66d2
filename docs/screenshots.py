"""Draw docs/feedback.png and docs/report.png: the demo class graded, then photographed by headless Chromium.

    .venv/bin/python docs/screenshots.py            # grade the demo class into a temporary folder first
    .venv/bin/python docs/screenshots.py OUT         # use an output folder that `grade` already wrote

The feedback page is the one of `cleo_no_scaling` (the unscaled-scores
mistake); the pictures are reduced to 256 colours to keep the repository small.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "demo")]

STUDENT = "cleo_no_scaling"


def main(argv: list[str]) -> int:
    from PIL import Image

    from test_browser import chromium, screenshot

    if chromium() is None:
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if argv:
            out = Path(argv[0]).resolve()
        else:
            import students

            from autograder.config import load_course
            from autograder.grade import grade_all

            students.write_class(tmp / "submitted")
            out = tmp / "out"
            grade_all(load_course(), tmp / "submitted", out, progress=sys.stderr)
        shots = {"feedback.png": (out / "feedback" / f"{STUDENT}.html", 1000, 1500),
                 "report.png": (out / "report.html", 1000, 1700)}
        for name, (page, width, height) in shots.items():
            raw = screenshot(page, tmp / name, width, height, tmp / "profile")
            with Image.open(raw) as im:
                im.convert("RGB").quantize(256).save(ROOT / "docs" / name, optimize=True)
            print(f"docs/{name}: {(ROOT / 'docs' / name).stat().st_size // 1024} KiB from {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
