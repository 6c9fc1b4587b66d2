"""What grading writes: gradebook.csv, a Gradescope results.json and a feedback page per student.

The feedback page is one self-contained HTML file (styles inline, pictures as
data URIs, no script, nothing fetched): scores per notebook and item, then
for every failing item the mistake it looks like and how to fix it, the
problems of each failing case (shapes, dtypes, NaN counts, largest
difference), and for one failing public case pictures of the student's
outputs beside the expected ones. Hidden cases are described by name and
note only; only public cases carry samples (`compare.CaseResult.samples`),
and only samples of public cases are drawn.

Points entered by hand for free-text items (the review page, or `finalize
--points`) are read with `Gradebook.results_with_manual`: they are in
results.json (one test per item graded by hand), the feedback pages and the
class report's totals.
"""
from __future__ import annotations

import functools
import hashlib
import html
import json
from pathlib import Path

from .config import Course
from .gradebook import Gradebook


def item_tests(item: dict, hidden_visibility: str = "after_published") -> list[dict]:
    """Gradescope tests for one item: one per case, or one for the whole item when it has no case results.

    A hidden case's test gets `hidden_visibility` (course.yml's grading.hidden_visibility), so that
    students cannot probe hidden cases by resubmitting; public cases and whole-item tests are visible.
    """
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
            "output": CaseResult(**case).text(),
            "visibility": "visible" if case["public"] else hidden_visibility,
        })
    return tests


def manual_test(item: dict) -> dict:
    """The Gradescope test of a free-text item graded by hand (`Gradebook.results_with_manual`)."""
    return {"name": item["id"], "score": item["score"], "max_score": item["max_score"],
            "status": "passed" if item["score"] >= item["max_score"] > 0 else "failed",
            "output": "Graded by hand." + (f" {item['manual_comment']}" if item.get("manual_comment") else ""),
            "visibility": "visible"}


def results_json(student_results: list[dict], hidden_visibility: str = "after_published") -> dict:
    """Gradescope's results.json for one student, over all their notebooks (hidden cases: `hidden_visibility`)."""
    tests, lines = [], []
    for nb in student_results:
        if nb["status"] != "graded":
            lines.append(f"{nb['notebook_id']}: {nb['message']}")
        for item in nb["items"]:
            if item.get("manual"):
                if item.get("graded_by_hand"):  # points entered by hand (review page, or finalize --points)
                    tests.append(manual_test(item))
                continue
            tests.extend(item_tests(item, hidden_visibility))
    score = sum(t["score"] for t in tests)
    return {
        "score": round(score, 4),
        "execution_time": round(sum(nb["seconds"] for nb in student_results), 3),
        "output": "\n".join(lines) or "Graded by the attention course autograder.",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }



def write_outputs(course: Course, book: Gradebook, out: Path, jobs: int = 1, pages: bool = True,
                  run: dict | None = None) -> None:
    """gradebook.csv and results/<student>.json for every student; with `pages`, also
    feedback/<student>.html and the class report (see `write_pages`)."""
    out = Path(out)
    items = course.item_ids
    extra = {i.id for nb in course.notebooks for i in nb.items if i.extra_credit}
    book.export_csv(out / "gradebook.csv", items, extra)
    (out / "results").mkdir(exist_ok=True)
    for student in book.students():
        _write(out / "results" / f"{student}.json",
               json.dumps(results_json(book.results_with_manual(student), course.grading.hidden_visibility),
                          indent=2))
    if pages:
        write_pages(course, book, out, jobs, run)


def write_pages(course: Course, book: Gradebook, out: Path, jobs: int = 1, run: dict | None = None) -> None:
    """feedback/<student>.html for every student, and the class report, drawn by `jobs` processes.

    A feedback page whose content would not change (same results, same page code) is not drawn again,
    so that grading a few new submissions does not redraw the pictures of the whole class. The pictures
    are most of the cost; the class report is drawn beside the pages, in its own process.
    """
    out = Path(out)
    (out / "feedback").mkdir(exist_ok=True)
    tasks: list = [("report", course, out, run)]
    for student in book.students():
        results = book.results_with_manual(student)
        page = out / "feedback" / f"{student}.html"
        digest = _page_digest(course, student, results)
        if _stored_digest(page) != digest:
            tasks.append(("page", course, student, results, digest, page))
    if jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=multiprocessing.get_context("fork")) as pool:
            list(pool.map(_draw, tasks, chunksize=1))
    else:
        for task in tasks:
            _draw(task)


def _draw(task) -> None:
    if task[0] == "report":
        from . import classreport

        _, course, out, run = task
        book = Gradebook(out / "gradebook.db")
        try:
            classreport.write_report(course, WithManual(book), out, run)
        finally:
            book.close()
    else:
        _draw_page(task[1:])


class WithManual:
    """A gradebook whose `results` carry the points entered by hand (what the class report reads)."""

    def __init__(self, book: Gradebook):
        self.book = book

    def students(self) -> list[str]:
        return self.book.students()

    def results(self, student_id: str) -> list[dict]:
        return self.book.results_with_manual(student_id)


def _draw_page(args) -> None:
    course, student, results, digest, page = args
    _write(page, feedback_html(course, student, results, digest))


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


@functools.cache
def _code_digest() -> str:
    h = hashlib.sha256()
    for name in ("report.py", "pictures.py"):
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()


def _page_digest(course: Course, student: str, results: list[dict]) -> str:
    payload = json.dumps([course.name, student, results], sort_keys=True, default=str)
    return hashlib.sha256((payload + _code_digest()).encode()).hexdigest()[:24]


DIGEST_META = "<meta name='feedback-digest' content='{}'>"


def _stored_digest(page: Path) -> str | None:
    try:
        with open(page, encoding="utf-8") as f:
            head = f.read(400)
    except OSError:
        return None
    start = head.find("<meta name='feedback-digest' content='")
    if start < 0:
        return None
    start += len("<meta name='feedback-digest' content='")
    return head[start:head.find("'", start)]


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1000px;margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
h3{margin:1.2em 0 .3em}a{color:#1f5fa8}
table{border-collapse:collapse;width:100%;margin:.5em 0}td,th{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f6f7f9}td.num{white-space:nowrap}
.pass{color:#17702b}.fail{color:#b3261e}.muted{color:#6b6b6b}
.bar{display:inline-block;width:80px;height:.6em;background:#eee;border-radius:3px;margin-left:.5em;vertical-align:middle}
.bar>span{display:block;height:100%;border-radius:3px}
.mistake{background:#fff4e5;border-left:4px solid #f0a030;padding:.4em .8em;margin:.4em 0}
.stopped{background:#fdecea;border-left:4px solid #b3261e;padding:.4em .8em;margin:.4em 0}
.advice{background:#eef4fb;border-left:4px solid #1f5fa8;padding:.4em .8em;margin:.4em 0}
pre{background:#f6f6f6;padding:.5em .7em;overflow-x:auto;white-space:pre-wrap;margin:.2em 0 .6em;font-size:.9em}
figure{margin:.6em 0 1em}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
.case{margin:.3em 0 .2em}.tag{font-size:.8em;border-radius:3px;padding:0 .35em;background:#eee;color:#444}
.tag.public{background:#e3f0e6}.tag.hidden{background:#ececf4}
"""

MAX_PICTURES = 3
"""Pictures per failing item: the failing outputs of one public case."""


def _bar(score: float, max_score: float) -> str:
    frac = 1.0 if max_score <= 0 else max(0.0, min(1.0, score / max_score))
    color = "#17702b" if frac >= 1 else ("#f0a030" if frac >= 0.5 else "#b3261e")
    return (f"<span class='bar' aria-hidden='true'><span style='width:{frac * 100:.0f}%;background:{color}'>"
            "</span></span>")


def _fmt(x: float) -> str:
    return f"{x:.3g}" if x != round(x) else f"{x:g}"


def _failing_outputs(case: dict) -> dict:
    """The samples of a failing public case whose output the problems name (all of them if none is named)."""
    if not case.get("public") or case.get("passed"):
        return {}
    samples = case.get("samples") or {}
    named = {n: s for n, s in samples.items()
             if any(p.startswith((f"{n}:", f"{n}[")) for p in case.get("problems", []))}
    chosen = named or samples
    from .pictures import AXIS_NAMES, LINE_NAMES

    known = set(AXIS_NAMES) | set(LINE_NAMES)
    return dict(sorted(chosen.items(), key=lambda kv: kv[0] not in known))


def _size(nested) -> int:
    return sum(_size(x) for x in nested) if isinstance(nested, list) else 1


def picture_case(item: dict) -> dict | None:
    """The failing public case to draw: the one with the largest sample (the first among equals)."""
    best, best_size = None, 0
    for case in item["cases"]:
        outputs = _failing_outputs(case)
        if outputs:
            size = max(_size(s["expected"]) for s in outputs.values())
            if size > best_size:
                best, best_size = case, size
    return best


@functools.lru_cache(maxsize=1024)
def _picture(name: str, payload: str) -> tuple[str, str] | None:
    from . import pictures

    sample = json.loads(payload)
    return pictures.sample_picture(name, sample["got"], sample["expected"])


def item_pictures(item: dict) -> list[dict]:
    """Pictures of one failing item: [{case, output, uri, caption}], for one public case only."""
    case = picture_case(item)
    if case is None:
        return []
    out = []
    for name, sample in list(_failing_outputs(case).items())[:MAX_PICTURES]:
        drawn = _picture(name, json.dumps(sample, sort_keys=True))
        if drawn:
            out.append({"case": case["case"], "note": case.get("note", ""), "output": name,
                        "uri": drawn[0], "caption": drawn[1]})
    return out


def _advice(item: dict, failures: list[dict]) -> str:
    """What to do when no known mistake was named."""
    from .compare import still_stub, unanswered

    raised = [c for c in failures if c["problems"] and c["problems"][0].startswith("raised ")]
    if still_stub(failures):
        return "This is still the stub: replace <code>raise NotImplementedError()</code> with your code."
    if unanswered(failures):
        return "No answer yet: the answer cell still holds its placeholder (None). Write your answer there."
    if raised and len(raised) == len(failures):
        return ("Every case raised an error: run the public check in the notebook and read the first error; "
                "the line it names is in your code.")
    if any(c["public"] for c in failures):
        return ("No known mistake matches your outputs. Compare your values with the expected ones on the "
                "public case below, and re-run <code>check(...)</code> in the notebook.")
    return ("The public cases pass but some hidden cases fail: look at what those cases test (their notes), "
            "for example other shapes, dtypes, masks or edge cases.")


def feedback_html(course: Course, student: str, results: list[dict], digest: str = "") -> str:
    """A self-contained feedback page: scores, then every failure with its diagnosis and pictures."""
    e = html.escape
    total = sum(i["score"] for nb in results for i in nb["items"])
    possible = sum(i["max_score"] for nb in results for i in nb["items"] if not i.get("extra_credit"))
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             + (DIGEST_META.format(e(digest)) if digest else ""),
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>Feedback: {e(student)}</title><style>{CSS}</style></head><body>",
             f"<header><h1>{e(course.name)}</h1><p>Feedback for <b>{e(student)}</b>: "
             f"<b id='total'>{_fmt(total)}</b> of {_fmt(possible)} points{_bar(total, possible)}</p>"
             "<p class='muted'>Free-text answers are graded by hand and count 0 until then. Each item's points are "
             "shared among its cases, public and hidden.</p></header>"]
    parts.append("<section id='scores'><h2>Scores</h2><table><tr><th>notebook</th><th>score</th>"
                 "<th>items with full marks</th></tr>")
    for nb in results:
        auto = [i for i in nb["items"] if not i.get("manual")]
        nb_score = sum(i["score"] for i in nb["items"])
        nb_max = sum(i["max_score"] for i in nb["items"] if not i.get("extra_credit"))
        full = sum(i["score"] >= i["max_score"] for i in auto)
        parts.append(f"<tr><td><a href='#nb-{e(nb['notebook_id'])}'>{e(nb['title'])}</a></td>"
                     f"<td class='num'>{_fmt(nb_score)} / {_fmt(nb_max)}{_bar(nb_score, nb_max)}</td>"
                     f"<td>{full} of {len(auto)}</td></tr>")
    parts.append("</table></section>")
    for nb in results:
        parts.extend(_notebook_html(nb))
    parts.append("<footer><p class='muted'>Hidden cases are described by their name and note, never shown: "
                 "pictures are drawn from public cases only.</p></footer></body></html>")
    return "\n".join(parts)


def _notebook_html(nb: dict) -> list[str]:
    e = html.escape
    nb_score = sum(i["score"] for i in nb["items"])
    nb_max = sum(i["max_score"] for i in nb["items"] if not i.get("extra_credit"))
    parts = [f"<section class='notebook' id='nb-{e(nb['notebook_id'])}'>",
             f"<h2>{e(nb['title'])}: {_fmt(nb_score)} / {_fmt(nb_max)}</h2>"]
    if nb["status"] != "graded":
        parts.append(f"<p class='stopped'>{e(nb['message'])}</p>")
    parts.append("<table class='items'><tr><th>item</th><th>score</th><th>cases passed</th><th>diagnosis</th></tr>")
    for item in nb["items"]:
        passed = sum(c["passed"] for c in item["cases"])
        ok = item["score"] >= item["max_score"]
        cls = "pass" if ok else "fail"
        if item.get("manual"):
            note, cls = "graded by hand" if item.get("graded_by_hand") else "graded by hand (not yet)", "muted"
            if item.get("manual_comment"):
                note += f": {item['manual_comment']}"
        elif item["message"]:
            note = item["message"]
        else:
            names = _mistakes(item)
            note = "; ".join(m["title"] for m in names) if names else ("" if ok else "see below")
        link = (f"<a href='#item-{e(item['id'])}'>{e(item['id'])}</a>" if not ok and not item.get("manual")
                else e(item["id"]))
        extra = " <span class='tag'>extra credit</span>" if item.get("extra_credit") else ""
        cases = f"{passed} / {len(item['cases'])}" if item["cases"] else "&ndash;"
        parts.append(f"<tr><td>{link}{extra}</td><td class='num {cls}'>{_fmt(item['score'])} / "
                     f"{_fmt(item['max_score'])}{_bar(item['score'], item['max_score'])}</td>"
                     f"<td>{cases}</td><td>{e(note)}</td></tr>")
    parts.append("</table>")
    if nb.get("cell_problems"):
        parts.append("<p>Cells that failed when the notebook was run top to bottom (the rest still ran):</p><ul>")
        for problem in nb["cell_problems"]:
            where = (f"code cell {problem['number']}" if problem.get("number")  # Jupyter's In [n]
                     else f"cell {problem['index'] + 1}")  # a gradebook written before code cells were numbered
            parts.append(f"<li>{where}: <code>{e(problem['error'])}</code></li>")
        parts.append("</ul>")
    for item in nb["items"]:
        if item.get("manual") or item["score"] >= item["max_score"]:
            continue
        parts.extend(_item_html(item))
    parts.append("</section>")
    return parts


def _mistakes(item: dict) -> list[dict]:
    """The distinct mistakes named on an item's cases, most frequent first, each with the cases it was seen on."""
    seen: dict[str, dict] = {}
    for case in item["cases"]:
        m = case.get("mistake")
        if m:
            seen.setdefault(m["name"], dict(m, cases=[]))["cases"].append(case["case"])
    return sorted(seen.values(), key=lambda m: -len(m["cases"]))


def _item_html(item: dict) -> list[str]:
    e = html.escape
    failures = [c for c in item["cases"] if not c["passed"]]
    parts = [f"<section class='item' id='item-{e(item['id'])}'>",
             f"<h3>{e(item['id'])}: {_fmt(item['score'])} / {_fmt(item['max_score'])}</h3>"]
    if item["message"]:
        parts.append(f"<p class='stopped'>{e(item['message'])}</p>")
    mistakes = _mistakes(item)
    plural = "s" if len(failures) != 1 else ""
    for m in mistakes:
        parts.append(f"<div class='mistake' data-mistake='{e(m['name'])}'><b>Likely mistake:</b> {e(m['title'])}."
                     f"<br><b>How to fix it:</b> {e(m['hint'])}.<br><span class='muted'>Seen on "
                     f"{len(m['cases'])} of {len(failures)} failing case{plural}.</span></div>")
    if not mistakes and failures:
        parts.append(f"<div class='advice'>{_advice(item, failures)}</div>")
    pictures = item_pictures(item)
    if pictures:
        first = pictures[0]
        parts.append(f"<p>On the public case <b>{e(first['case'])}</b>"
                     f"{' (' + e(first['note']) + ')' if first['note'] else ''}, your outputs beside the expected "
                     "ones:</p>")
        for p in pictures:
            parts.append(f"<figure class='picture' data-case='{e(p['case'])}' data-output='{e(p['output'])}'>"
                         f"<img src='{p['uri']}' alt='{e(p['output'])}: yours beside the expected, case "
                         f"{e(p['case'])}'><figcaption>{e(p['output'])}: {e(p['caption'])}.</figcaption></figure>")
    if failures:
        parts.append(f"<p>Failing cases ({len(failures)} of {len(item['cases'])}):</p>")
    for case in failures:
        vis = "public" if case["public"] else "hidden"
        tag = ""
        if case.get("mistake") and len(mistakes) > 1:
            tag = f" <span class='tag'>{e(case['mistake']['title'])}</span>"
        parts.append(f"<div class='case'><b class='fail'>{e(case['case'])}</b> <span class='tag {vis}'>{vis}</span>"
                     f"{' <span class=muted>' + e(case['note']) + '</span>' if case['note'] else ''}{tag}</div>")
        parts.append("<pre>" + e("\n".join(case["problems"])) + "</pre>")
    parts.append("</section>")
    return parts
