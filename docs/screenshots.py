"""Draw docs/feedback.png, docs/report.png and docs/review.png: the demo class graded, then photographed by
headless Chromium.

    .venv/bin/python docs/screenshots.py            # grade the demo class into a temporary folder first
    .venv/bin/python docs/screenshots.py OUT         # use an output folder that `grade` already wrote

The feedback page is the one of `cleo_no_scaling` (the unscaled-scores
mistake); the review page (`python -m autograder review`) shows the written
answer of `dora_answers` (tests/test_review.py adds the students who wrote
answers to the demo class), with a rubric, on a copy of the gradebook. The
pictures are reduced to 256 colours to keep the repository small.
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

            from test_review import write_answer_students

            students.write_class(tmp / "submitted")
            write_answer_students(tmp / "submitted")
            out = tmp / "out"
            grade_all(load_course(), tmp / "submitted", out, progress=sys.stderr)
        shots = {"feedback.png": (out / "feedback" / f"{STUDENT}.html", 1000, 1500),
                 "report.png": (out / "report.html", 1000, 1700)}
        for name, (page, width, height) in shots.items():
            raw = screenshot(page, tmp / name, width, height, tmp / "profile")
            with Image.open(raw) as im:
                im.convert("RGB").quantize(256).save(ROOT / "docs" / name, optimize=True)
            print(f"docs/{name}: {(ROOT / 'docs' / name).stat().st_size // 1024} KiB from {page}")
        raw = review_screenshot(out, tmp)
        with Image.open(raw) as im:
            im.convert("RGB").quantize(256).save(ROOT / "docs" / "review.png", optimize=True)
        print(f"docs/review.png: {(ROOT / 'docs' / 'review.png').stat().st_size // 1024} KiB from the review page")
    return 0


RUBRIC = [(2, "Vanishing gradients, with the plot; LSTMs ease them, not the sequential computation"),
          (1, "Right idea, but no reference to the plot or to what LSTMs leave"),
          (0, "Off topic, or no answer")]


def review_screenshot(out: Path, tmp: Path) -> Path:
    """The manual grading page on a copy of OUT's gradebook: a rubric, the untouched answers given 0, and the
    first written answer of checkpoint_rnn on screen."""
    import shutil
    import threading
    from urllib.parse import urlencode

    from test_browser import chromium
    from test_review import Browser

    from autograder.config import load_course
    from autograder.gradebook import Gradebook
    from autograder.review import Review, bind

    copy = tmp / "review-out"
    copy.mkdir()
    shutil.copy(out / "gradebook.db", copy / "gradebook.db")
    app = Review(load_course(), copy)
    book = Gradebook(copy / "gradebook.db")
    try:
        answers = [a for a in app.answers(book) if a.item_id == "checkpoint_rnn"]
        book.set_rubric("checkpoint_rnn", [{"points": p, "comment": c} for p, c in RUBRIC])
        for a in answers:
            if a.state != "answered":
                book.set_manual(a.student, a.item_id, 0.0, "no answer", None)
    finally:
        book.close()
    shown = next((a for a in answers if a.student == "dora_answers"), None) or \
        next((a for a in answers if a.state == "answered"), answers[0])
    server = bind(app, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = Browser(chromium(), tmp / "review-profile")
    try:
        tab = browser.tab()
        tab.call("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1, mobile=False)
        tab.goto(app.url("/grade?" + urlencode({"item": shown.item_id, "student": shown.student})))
        tab.press("1", shift=True)  # the first rubric line, as a grader would pick it
        return tab.screenshot(tmp / "review.png")
    finally:
        browser.close()
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
