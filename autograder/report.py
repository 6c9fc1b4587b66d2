"""What grading writes: gradebook.csv, a Gradescope results.json and a feedback page per student."""
from __future__ import annotations

import html
import json
from pathlib import Path

from .config import Course
from .gradebook import Gradebook


def item_tests(item: dict) -> list[dict]:
    """Gradescope tests for one item: one per case, or one for the whole item when it has no case results."""
    if not item["cases"]:
        return [{
            "name": item["id"], "score": item["score"], "max_score": item["max_score"],
            "status": "passed" if item["score"] >= item["max_score"] > 0 else "failed",
            "output": item["message"], "visibility": "visible",
        }]
    tests = []
    for case in item["cases"]:
        from .compare import CaseResult

        tests.append({
            "name": f"{item['id']}: {case['case']}", "score": round(case["score"], 6),
            "max_score": round(case["max_score"], 6), "status": "passed" if case["passed"] else "failed",
            "output": CaseResult(**case).text(), "visibility": "visible",
        })
    return tests


def results_json(student_results: list[dict]) -> dict:
    """Gradescope's results.json for one student, over all their notebooks."""
    tests, lines = [], []
    for nb in student_results:
        if nb["status"] != "graded":
            lines.append(f"{nb['notebook_id']}: {nb['message']}")
        for item in nb["items"]:
            if item.get("manual"):
                continue
            tests.extend(item_tests(item))
    score = sum(t["score"] for t in tests)
    return {
        "score": round(score, 4),
        "execution_time": round(sum(nb["seconds"] for nb in student_results), 3),
        "output": "\n".join(lines) or "Graded by the attention course autograder.",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def write_outputs(course: Course, book: Gradebook, out: Path) -> None:
    """gradebook.csv, results/<student>.json and feedback/<student>.html for every student."""
    out = Path(out)
    items = course.item_ids
    extra = {i.id for nb in course.notebooks for i in nb.items if i.extra_credit}
    book.export_csv(out / "gradebook.csv", items, extra)
    (out / "results").mkdir(exist_ok=True)
    (out / "feedback").mkdir(exist_ok=True)
    for student in book.students():
        results = book.results(student)
        _write(out / "results" / f"{student}.json", json.dumps(results_json(results), indent=2))
        _write(out / "feedback" / f"{student}.html", feedback_html(course, student, results))


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


CSS = """
body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;width:100%;margin:.5em 0}td,th{border:1px solid #ddd;padding:.3em .5em;text-align:left}
.pass{color:#17702b}.fail{color:#b3261e}.mistake{background:#fff4e5;border-left:4px solid #f0a030;padding:.4em .8em;margin:.3em 0}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;white-space:pre-wrap}.muted{color:#777}
"""


def feedback_html(course: Course, student: str, results: list[dict]) -> str:
    """A self-contained feedback page: scores, then every failure with its diagnosis."""
    e = html.escape
    total = sum(i["score"] for nb in results for i in nb["items"])
    possible = sum(i["max_score"] for nb in results for i in nb["items"] if not i.get("extra_credit"))
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Feedback: {e(student)}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>{e(course.name)}</h1><p>Feedback for <b>{e(student)}</b>: "
             f"<b>{total:g}</b> of {possible:g} points (free-text answers are graded by hand).</p>"]
    for nb in results:
        nb_score = sum(i["score"] for i in nb["items"])
        nb_max = sum(i["max_score"] for i in nb["items"] if not i.get("extra_credit"))
        parts.append(f"<h2 id='{e(nb['notebook_id'])}'>{e(nb['title'])}: {nb_score:g} / {nb_max:g}</h2>")
        if nb["status"] != "graded":
            parts.append(f"<p class='fail'>{e(nb['message'])}</p>")
        parts.append("<table><tr><th>item</th><th>score</th><th>cases passed</th><th>note</th></tr>")
        for item in nb["items"]:
            passed = sum(c["passed"] for c in item["cases"])
            cls = "pass" if item["score"] >= item["max_score"] else "fail"
            note = item["message"] or (f"likely mistake: {item['mistake']}" if item["mistake"] else "")
            parts.append(
                f"<tr><td><a href='#{e(item['id'])}'>{e(item['id'])}</a></td><td class='{cls}'>{item['score']:g} / "
                f"{item['max_score']:g}</td><td>{passed} / {len(item['cases'])}</td><td>{e(note)}</td></tr>"
            )
        parts.append("</table>")
        for problem in nb.get("cell_problems", []):
            parts.append(f"<p class='muted'>Cell {problem['index'] + 1}: {e(problem['error'])}</p>")
        for item in nb["items"]:
            failures = [c for c in item["cases"] if not c["passed"]]
            if not failures and not item["message"]:
                continue
            parts.append(f"<h3 id='{e(item['id'])}'>{e(item['id'])}</h3>")
            if item["message"]:
                parts.append(f"<p>{e(item['message'])}</p>")
            for case in failures:
                vis = "public" if case["public"] else "hidden"
                parts.append(f"<p><b class='fail'>case {e(case['case'])}</b> <span class='muted'>({vis}"
                             f"{', ' + e(case['note']) if case['note'] else ''})</span></p>")
                parts.append("<pre>" + e("\n".join(case["problems"])) + "</pre>")
                if case["mistake"]:
                    parts.append(f"<div class='mistake'><b>Likely mistake:</b> {e(case['mistake']['title'])}.<br>"
                                 f"<b>Hint:</b> {e(case['mistake']['hint'])}.</div>")
    parts.append("<p class='muted'>Hidden cases are described, never shown.</p></body></html>")
    return "\n".join(parts)
