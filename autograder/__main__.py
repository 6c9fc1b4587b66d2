"""Command line: python -m autograder {build,normalize,check,grade}."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, load_course


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    parser.add_argument("--course", type=Path, help="course.yml to use (default: the repository's)")
    sub = parser.add_subparsers(dest="command", required=True)

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

    args = parser.parse_args(argv)
    try:
        course = load_course(args.course)
        if args.command == "build":
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
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


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
        text = path.read_text(encoding="utf-8")
        new = source.dumps(source.normalize(source.read_draft(path), nb, str(path)))
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(f"normalized {path}")
    return 0


def _grade(course, args) -> int:
    from .grade import GradingError, grade_all

    try:
        summary = grade_all(course, args.submitted, args.out, workers=args.workers)
    except GradingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for problem in summary["problems"]:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"graded {summary['graded']} submission(s), {summary['unchanged']} unchanged, "
          f"in {summary['seconds']:.1f}s with {summary['workers']} worker(s); "
          f"gradebook: {args.out / 'gradebook.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
