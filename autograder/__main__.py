"""Command line: python -m autograder {new,build,normalize,check,grade,report,summary,release,gradescope,import,
manual,finalize,review}."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, load_course
from .reference import ReferenceError_

INSTRUCTOR = (Path(__file__).resolve().parent / "build.py").exists()
"""False in the student release, which ships only what `check` needs (release.STUDENT_MODULES): then
the command line offers `check` alone (`_student_main`)."""
if INSTRUCTOR:
    from .source import SourceError
else:
    SourceError = ReferenceError_


def main(argv=None) -> int:
    if not INSTRUCTOR:
        return _student_main(argv)
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    parser.add_argument("--course", type=Path, help="course.yml to use (default: the repository's)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("new", help="scaffold a new auto-graded exercise: its cells in solutions/, course.yml, "
                       "autograder/exercises/ and autograder/hidden/ (beside --course's course.yml)")
    p.add_argument("item", help="the item's id: the name students define (a Python identifier)")
    p.add_argument("--notebook", required=True, help="the notebook (its id in course.yml) the item is added to")
    p.add_argument("--points", type=float, default=1.0, help="the item's points (default: 1)")

    p = sub.add_parser("build", help="build weeks/ and the public answer keys from solutions/")
    p.add_argument("notebooks", nargs="*", help="notebook ids (default: all)")

    p = sub.add_parser("normalize", help="put source notebooks in canonical form (or import a percent draft)")
    p.add_argument("paths", nargs="*", type=Path, help="default: every notebook in solutions/")
    p.add_argument("--into", type=Path, help="with one draft (.py or .ipynb): write it here, normalized")

    p = sub.add_parser("check", help="run a notebook and check it on the public cases")
    p.add_argument("notebook", type=Path)
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("grade", help="grade every submission in SUBMITTED/<student>/<week>/<notebook>.ipynb")
    p.add_argument("submitted", type=Path)
    p.add_argument("--out", type=Path, required=True, help="output folder (gradebook, results, feedback)")
    p.add_argument("--workers", type=int, default=0, help="parallel workers (default: course.yml, else all cores)")
    p.add_argument("--no-sandbox", action="store_true",
                   help="grade without the sandbox (only for notebooks you trust, where user namespaces are off)")
    p.add_argument("--no-pages", action="store_true",
                   help="write only the gradebook and results.json (draw the pages later with `report`)")

    p = sub.add_parser("report", help="write gradebook.csv, canvas.csv, results, the feedback pages and the class "
                       "report of a graded OUT folder again (with the points entered by hand)")
    p.add_argument("out", type=Path)
    p.add_argument("--workers", type=int, default=0, help="parallel processes (default: all cores)")
    p.add_argument("--roster", type=Path, help="a Canvas gradebook export, to fill canvas.csv's student columns")

    p = sub.add_parser("summary", help="print each student's points per notebook from OUT/gradebook.csv")
    p.add_argument("out", type=Path)

    _add_integration_commands(sub)

    args = parser.parse_args(argv)
    try:
        course = load_course(args.course)
        _cross_check(course, args)
        if args.command == "new":
            from .scaffold import new_item, next_steps

            new_item(course, args.item, args.notebook, args.points)
            print(next_steps(course, args.item, args.notebook, args.points))
        elif args.command == "build":
            from .build import build

            changed = build(course, only=args.notebooks or None)
            print(f"build: {len(changed)} file(s) changed")
        elif args.command == "normalize":
            return _normalize(course, args)
        elif args.command == "check":
            from .check import check_notebook

            if not args.notebook.exists():
                print(f"error: {args.notebook}: no such file", file=sys.stderr)
                return 2
            return check_notebook(args.notebook, as_json=args.json)
        elif args.command == "grade":
            return _grade(course, args)
        elif args.command == "report":
            return _report(course, args)
        elif args.command == "summary":
            return _summary(course, args)
        elif args.command in INTEGRATION_COMMANDS:
            return INTEGRATION_COMMANDS[args.command](course, args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ReferenceError_, SourceError) as exc:
        print(f"error in the course itself (not in a submission): {exc}", file=sys.stderr)
        return 3
    return 0


def _cross_check(course, args) -> None:
    """Check course.yml against solutions/, exercises/ and hidden/ for what this command uses (ConfigError)."""
    from .crosscheck import check_course_files

    if args.command == "check":  # only the notebook checked: a cold check stays fast
        nb = next((n for n in course.notebooks if n.id == args.notebook.stem), None)
        if nb is not None:
            check_course_files(course, [nb])
    elif args.command == "normalize":  # it writes solutions/ only; a draft's target may not exist yet
        target = args.into.stem if args.into else None
        check_course_files(course, [nb for nb in course.notebooks if nb.id != target], parts=("solutions",))
    elif args.command == "build" and args.notebooks:
        check_course_files(course, [course.notebook(n) for n in args.notebooks])
    elif args.command == "new":  # it writes the files beside the course.yml it is given
        check_course_files(course, root=course.source.parent)
    else:
        check_course_files(course)


def _normalize(course, args) -> int:
    from . import source

    if args.into:
        if len(args.paths) != 1:
            print("error: --into takes exactly one draft", file=sys.stderr)
            return 2
        nb_id = args.into.stem
        target = course.notebook(nb_id)
        nb = source.normalize(source.read_draft(args.paths[0]), target, str(args.paths[0]))
        args.into.parent.mkdir(parents=True, exist_ok=True)
        args.into.write_text(source.dumps(nb), encoding="utf-8")
        print(f"wrote {args.into}")
        return 0
    for nb in course.notebooks:
        path = source.source_path(nb)
        if args.paths and path.resolve() not in {p.resolve() for p in args.paths}:
            continue
        if not path.exists():
            print(f"skipped {path}: not written yet")
            continue
        text = path.read_text(encoding="utf-8")
        new = source.dumps(source.normalize(source.read_draft(path), nb, str(path)))
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"normalized {path}")
    return 0


def _report(course, args) -> int:
    import os

    from .gradebook import Gradebook
    from .report import write_outputs

    db = args.out / "gradebook.db"
    if not db.exists():
        print(f"error: {db}: no gradebook here; run grade first", file=sys.stderr)
        return 2
    book = Gradebook(db)
    try:
        write_outputs(course, book, args.out, jobs=args.workers or os.cpu_count() or 1)
        canvas = _report_canvas(course, book, args)
    finally:
        book.close()
    print(f"gradebook: {args.out / 'gradebook.csv'}; {canvas}; feedback pages: {args.out / 'feedback'}; "
          f"class report: {args.out / 'report.html'}")
    return 0


def _report_canvas(course, book, args) -> str:
    """canvas.csv again (points entered by hand, late penalties), keeping one written from a roster unless
    --roster is given again."""
    import csv
    import re

    from .policy import PolicyError, export_canvas

    path = args.out / "canvas.csv"
    if path.exists() and not args.roster:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        if any(re.search(r"\(\d+\)$", column) for column in header):
            print(f"warning: {path} was written from a Canvas roster; left as it is (pass --roster to update it)",
                  file=sys.stderr)
            return f"canvas: {path} (not updated)"
    try:
        problems = export_canvas(course, book, path, args.roster)
    except PolicyError as exc:
        print(f"warning: canvas.csv not written: {exc}", file=sys.stderr)
        return "canvas: not written"
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    return f"canvas: {path}"


def _summary(course, args) -> int:
    """Points per notebook for each student (the gradebook has one column per item: too wide to read)."""
    import csv

    path = args.out / "gradebook.csv"
    if not path.exists():
        print(f"error: {path}: no gradebook here; run grade first", file=sys.stderr)
        return 2
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))

    def number(text) -> float:
        try:
            return float(text or 0)
        except ValueError:
            return 0.0

    def fmt(x: float) -> str:
        return f"{round(x, 2):g}"

    late = bool(rows) and "late_penalty" in rows[0]
    header = ["student"] + [f"{nb.id.split('_')[0]} /{fmt(sum(i.points for i in nb.items if not i.extra_credit))}"
                            for nb in course.notebooks]
    header += ["late"] if late else []
    header.append(f"total /{fmt(sum(i.points for nb in course.notebooks for i in nb.items if not i.extra_credit))}")
    table = [header]
    for row in rows:
        line = [row.get("student_id", "")]
        line += [fmt(sum(number(row.get(i.id)) for i in nb.items)) for nb in course.notebooks]
        penalty = number(row.get("late_penalty")) if late else 0.0
        line += [f"-{fmt(penalty)}" if penalty else "0"] if late else []
        line.append(fmt(number(row.get("total"))))
        table.append(line)
    widths = [max(len(r[c]) for r in table) for c in range(len(header))]
    for r in table:
        print("  ".join(r[0].ljust(widths[0]) if c == 0 else r[c].rjust(widths[c]) for c in range(len(r))).rstrip())
    print(f"\n{len(rows)} student(s); points per notebook (extra credit included), out of its maximum.")
    print(f"Points per item: {path}")
    for what, where in (("feedback pages", args.out / "feedback"), ("class report", args.out / "report.html")):
        if where.exists():
            print(f"{what[0].upper()}{what[1:]}: {where}")
    return 0


def _grade(course, args) -> int:
    from .grade import GradingError, grade_all

    try:
        summary = grade_all(course, args.submitted, args.out, workers=args.workers, pages=not args.no_pages,
                            sandbox=not args.no_sandbox)
    except GradingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for problem in summary["problems"]:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"graded {summary['graded']} submission(s), {summary['unchanged']} unchanged, "
          f"in {summary['seconds']:.1f}s with {summary['workers']} worker(s); "
          f"gradebook: {args.out / 'gradebook.csv'}")
    return 0


def _add_integration_commands(sub) -> None:
    """The commands that fit the course into other tools (nbgrader, Gradescope, GitHub Classroom, LMSs)."""
    p = sub.add_parser("release", help="write the student repository (notebooks, checker, README, workflow) to OUT")
    p.add_argument("out", type=Path)
    p.add_argument("notebooks", nargs="*", help="notebook or week ids (default: all); earlier releases in OUT are kept")
    p.add_argument("--publish-references", nargs="+", metavar="WEEK_OR_NOTEBOOK",
                   help="also publish these weeks' (or notebooks') reference functions and classes, for "
                   "`earlier.use(\"reference\")` in later notebooks; refused before the week's due date")

    p = sub.add_parser("gradescope", help="write a Gradescope autograder bundle (setup.sh, run_autograder)")
    p.add_argument("out", type=Path, help="the .zip to write")
    p.add_argument("notebooks", nargs="*", help="notebook or week ids this assignment grades (default: all)")

    p = sub.add_parser("import", help="import an LMS download into SUBMITTED/<student>/<week>/<notebook>.ipynb")
    p.add_argument("source", choices=["nbgrader", "canvas"], help="nbgrader: zip_collect-style names; canvas: "
                   "Canvas's Download Submissions archive")
    p.add_argument("archive", type=Path, help="the downloaded .zip (or a folder of its files)")
    p.add_argument("--into", type=Path, required=True, help="the SUBMITTED folder to write")
    p.add_argument("--pattern", help="nbgrader: file-name regular expression (default: nbgrader_config.py's)")
    p.add_argument("--metadata", type=Path, help="canvas: submission times (the submissions API's JSON, or a "
                   "CSV with user_id,submitted_at)")
    p.add_argument("--roster", type=Path, help="canvas: a Canvas gradebook export, to name students by SIS login")

    p = sub.add_parser("manual", help="export the free-text answers to OUT/manual/answers.csv and answers.html")
    p.add_argument("out", type=Path, help="the grading output folder (holding gradebook.db)")

    p = sub.add_parser("finalize", help="apply the late policy and the points entered by hand; write "
                       "gradebook.csv and canvas.csv again")
    p.add_argument("submitted", type=Path, help="the SUBMITTED folder that was graded (for timestamp.txt)")
    p.add_argument("--out", type=Path, required=True, help="the grading output folder (holding gradebook.db)")
    p.add_argument("--points", type=Path, help="answers.csv with points entered for the free-text answers")
    p.add_argument("--roster", type=Path, help="a Canvas gradebook export, to fill canvas.csv's student columns")

    p = sub.add_parser("review", help="a web page on 127.0.0.1 to grade the free-text answers by hand and read "
                       "the submissions (prints its URL; Ctrl-C stops it)")
    p.add_argument("out", type=Path, help="the grading output folder (holding gradebook.db)")
    p.add_argument("--port", type=int, help="port to listen on (default: 8765, or the next free one)")
    p.add_argument("--submitted", type=Path, help="the SUBMITTED folder that was graded, to show the notebooks")
    p.add_argument("--verbose", action="store_true", help="print each request (never its token)")


def _release(course, args) -> int:
    from .release import ReleaseError, release

    try:
        release(course, args.out, args.notebooks or None, publish=args.publish_references)
    except ReleaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _gradescope(course, args) -> int:
    from .gradescope import build_bundle
    from .release import ReleaseError

    try:
        build_bundle(course, args.out, args.notebooks or None)
    except ReleaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _import(course, args) -> int:
    from . import lms

    try:
        if args.source == "nbgrader":
            report = lms.import_nbgrader(course, args.archive, args.into, args.pattern or lms.NBGRADER_PATTERN)
        else:
            report = lms.import_canvas(course, args.archive, args.into, args.metadata, args.roster)
    except lms.ImportError_ as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.text())
    return 0 if report.imported else 2


def _manual(course, args) -> int:
    from .gradebook import Gradebook
    from .policy import export_manual

    db = args.out / "gradebook.db"
    if not db.exists():
        print(f"error: {db}: no gradebook; run python -m autograder grade first", file=sys.stderr)
        return 2
    book = Gradebook(db)
    try:
        csv_path, html_path, n = export_manual(course, book, args.out)
    finally:
        book.close()
    print(f"{n} free-text answer(s): enter points in {csv_path} (read them in {html_path}), then run "
          f"python -m autograder finalize SUBMITTED --out {args.out} --points {csv_path}")
    import csv

    with open(csv_path, newline="", encoding="utf-8") as f:
        flagged = [r for r in csv.DictReader(f) if (r.get("flag") or "").strip()]
    if flagged:
        print(f"{len(flagged)} answer(s) flagged (column flag): new or changed since the last export; "
              "clear a flag once you have looked at it")
    return 0


def _finalize(course, args) -> int:
    from .policy import PolicyError, finalize

    try:
        summary = finalize(course, args.submitted, args.out, args.points, args.roster)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in summary["late"]:
        print(f"late: {line}")
    for problem in summary["canvas_problems"]:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"{summary['manual']} manual score(s) entered, {summary['cleared']} cleared; "
          f"wrote {args.out / 'gradebook.csv'} and {args.out / 'canvas.csv'}")
    return 0


def _review(course, args) -> int:
    from .review import serve

    return serve(course, args.out, args.port, args.submitted, args.verbose)


INTEGRATION_COMMANDS = {"release": _release, "gradescope": _gradescope, "import": _import, "manual": _manual,
                        "finalize": _finalize, "review": _review}


def _student_main(argv=None) -> int:
    """The student release's command line: `check`, the one command whose code it ships."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m autograder",
        description="The course's checker. `check` runs a notebook the way the grader does (cells marked demo "
                    "skipped) and checks every exercise in it on its public cases; exit code 0 when all pass.",
        epilog="example: python -m autograder check weeks/week1/day06_scaled_dot_product_attention.ipynb")
    sub = parser.add_subparsers(dest="command", required=True, title="command")
    p = sub.add_parser("check", help="run a notebook and check it on the public cases")
    p.add_argument("notebook", type=Path, help="weeks/<week>/<notebook>.ipynb")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    command = next((a for i, a in enumerate(argv) if not a.startswith("-") and argv[i - 1:i] != ["--course"]), None)
    if command is not None and command != "check":
        print(f"error: {command!r} is not a command of this student copy of the course; it has one command, "
              "check: python -m autograder check weeks/<week>/<notebook>.ipynb (the instructor's commands "
              "are not part of it)", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    from .check import check_notebook

    try:
        load_course()
        if not args.notebook.exists():
            print(f"error: {args.notebook}: no such file", file=sys.stderr)
            return 2
        return check_notebook(args.notebook, as_json=args.json)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ReferenceError_ as exc:
        print(f"error in the course itself (not in your notebook): {exc}; please tell the instructor", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
