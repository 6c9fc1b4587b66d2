"""The review page: `python -m autograder review OUT [--port N] [--submitted SUBMITTED]`.

A small web server on 127.0.0.1 for the instructor, reading and writing OUT/gradebook.db:

- /grade: the free-text answers (manual items), one at a time across the class, item by item:
  the question (from the released notebook under weeks/), the student's answer (Markdown,
  rendered safely), points bounded by the item's points in course.yml, a comment, the item's
  rubric (editable, stored in the gradebook) and the progress ("graded 37/120"). Answers left
  empty or untouched from the stub are marked and can be given 0 in one action. Keyboard:
  j / right arrow next, k / left arrow previous, u next ungraded, a digit sets the points,
  Shift+digit picks a rubric line, c edits the comment, Enter saves and moves on.
- /student/<id>: a submission, read-only: the student's notebook (with `--submitted`), each
  graded item's score, the named mistake and the pictures of the feedback page beside the cell
  that defines it. Hidden cases are named and described, as on the feedback page; their inputs
  are never shown (the gradebook does not hold them).
- /class: every student's points (hand grades included), then the class report's tables, each
  student linked to their submission.

Every grade is saved with `Gradebook.set_manual`, one transaction per save. The form carries
the version (time) of the grade it showed; when another tab saved the same answer since, the
save still wins and the page says what it overwrote. `python -m autograder report OUT` then
writes gradebook.csv, canvas.csv, results/*.json and the feedback pages with the hand grades.

Security: the server listens on 127.0.0.1 only, and every request needs a random token (as
Jupyter does it): `?token=` on the first visit sets an HttpOnly, SameSite=Strict cookie and
redirects to the same page without it; anything else is refused with 403, as is a Host header
other than 127.0.0.1 / localhost (DNS rebinding). A POST also needs the CSRF field (an HMAC of
the token) and, when the browser sends one, a matching Origin. Student text is escaped
everywhere; Markdown is rendered by markdown-it-py with raw HTML off, images off and links to
http(s) and mailto only; notebook outputs are shown as text or as PNG/JPEG data only. Pages
carry a Content-Security-Policy that allows only the page's own script (by nonce) and data:
images. No endpoint runs code: notebooks are read as JSON, never executed.

The stack is the standard library's `http.server` (ThreadingHTTPServer) with HTML written by
Python functions and `html.escape`, as report.py writes the feedback pages, plus markdown-it-py,
already installed (jupytext needs it): nothing is added to the install.
"""
from __future__ import annotations

import hashlib
import hmac
import html
import http.server
import json
import math
import re
import secrets
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from .config import ROOT, Course, Item, Notebook
from .gradebook import Gradebook

HOST = "127.0.0.1"
DEFAULT_PORT = 8765
"""Tried first (then the next nine, then any free port) when --port is not given."""
MAX_BODY = 1 << 20
"""Largest POST body read (a comment or a rubric)."""
MAX_SHOWN = 200_000
"""Characters of one answer, cell or output shown; the rest is cut, and the page says so."""
MAX_OUTPUTS = 40
"""Outputs shown per notebook cell."""
MAX_COMMENT = 10_000
UNANSWERED = {"", "YOUR ANSWER HERE"}
"""What a free-text cell holds when the student wrote nothing (nbgrader's placeholder), as in policy.py."""

e = html.escape


# ---------------------------------------------------------------- safe text

_md = threading.local()


def markdown_html(text: str) -> str:
    """Markdown as HTML, safely: raw HTML is shown as text, no images, links to http(s)/mailto only."""
    if not hasattr(_md, "renderer"):
        from markdown_it import MarkdownIt

        md = (MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
              .enable("table").disable("image"))
        md.validateLink = lambda url: url.strip().lower().startswith(("http://", "https://", "mailto:"))
        _md.renderer = md
    return _md.renderer.render(text)


def shown(text: str, limit: int = MAX_SHOWN) -> tuple[str, str]:
    """(text cut at `limit` characters, an HTML note saying how much was cut or "")."""
    if len(text) <= limit:
        return text, ""
    return text[:limit], f"<p class='cut'>(cut here: {len(text) - limit:,} more characters not shown)</p>"


def _fmt(x: float | None) -> str:
    if x is None:
        return "none"
    return f"{x:.3g}" if x != round(x) else f"{x:g}"


def _points(x: float) -> str:
    return f"{_fmt(x)} point{'' if x == 1 else 's'}"


def _when(at: float | None) -> str:
    if at is None:
        return "an unknown time"
    stamp = time.localtime(at)
    today = time.localtime()
    day = "" if stamp[:3] == today[:3] else time.strftime("%Y-%m-%d ", stamp)
    return day + time.strftime("%H:%M:%S", stamp)


def _normal(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- the data

@dataclass(frozen=True)
class Answer:
    """One student's answer to one free-text item."""

    item_id: str
    notebook_id: str
    student: str
    text: str
    state: str
    """"answered", "empty" or "untouched" (the stub of the released notebook, or nbgrader's placeholder)."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.student, self.item_id)


class Review:
    """What the pages show, read from OUT/gradebook.db (one connection per request) and weeks/."""

    def __init__(self, course: Course, out: Path, submitted: Path | None = None, root: Path = ROOT,
                 token: str | None = None):
        self.course, self.out, self.root = course, Path(out), Path(root)
        self.submitted = Path(submitted) if submitted else None
        self.db_path = self.out / "gradebook.db"
        self.token = token or secrets.token_urlsafe(32)
        self.csrf = hmac.new(self.token.encode(), b"review-csrf", hashlib.sha256).hexdigest()[:40]
        self.port = 0
        self.manual_items: list[tuple[Notebook, Item]] = [
            (nb, it) for nb in course.notebooks for it in nb.items if it.manual]
        self._lock = threading.Lock()
        self._answers_key: object = None
        self._answers: list[Answer] = []
        self._release: dict[str, tuple[str, str]] = {}
        self._flash: OrderedDict[str, tuple[str, str]] = OrderedDict()

    # --- access

    @property
    def cookie_name(self) -> str:
        return f"autograder-review-{self.port}"

    def url(self, path: str = "/grade") -> str:
        """The address of a page with the token (what to open first)."""
        return f"http://{HOST}:{self.port}{path}{'&' if '?' in path else '?'}token={self.token}"

    def token_ok(self, token: str | None) -> bool:
        return isinstance(token, str) and hmac.compare_digest(token.encode(), self.token.encode())

    def csrf_ok(self, value: str | None) -> bool:
        return isinstance(value, str) and hmac.compare_digest(value.encode(), self.csrf.encode())

    def host_ok(self, host: str | None) -> bool:
        return host in {f"{HOST}:{self.port}", f"localhost:{self.port}"}

    def origin_ok(self, origin: str | None) -> bool:
        return origin is None or origin in {f"http://{HOST}:{self.port}", f"http://localhost:{self.port}"}

    def book(self) -> Gradebook:
        return Gradebook(self.db_path)

    def flash(self, kind: str, text: str) -> str:
        key = secrets.token_urlsafe(9)
        with self._lock:
            self._flash[key] = (kind, text)
            while len(self._flash) > 500:
                self._flash.popitem(last=False)
        return key

    def flash_of(self, key: str | None) -> tuple[str, str] | None:
        with self._lock:
            return self._flash.get(key or "")

    # --- the released notebooks

    def release_text(self, nb: Notebook, item_id: str) -> tuple[str, str]:
        """(the question: the markdown cell above the answer cell, the answer cell's stub) from weeks/."""
        with self._lock:
            if item_id in self._release:
                return self._release[item_id]
        from . import notebook

        question = stub = ""
        try:
            cells = notebook.read(self.root / "weeks" / nb.path).cells
        except notebook.NotebookError:
            cells = []
        for index, cell in enumerate(cells):
            if notebook.grade_id(cell) == item_id:
                stub = cell.get("source", "")
                before = cells[index - 1] if index else {}
                question = before.get("source", "") if before.get("cell_type") == "markdown" else ""
                break
        with self._lock:
            self._release[item_id] = (question, stub)
        return question, stub

    def state_of(self, nb: Notebook, item_id: str, text: str) -> str:
        if not text.strip():
            return "empty"
        _, stub = self.release_text(nb, item_id)
        if text.strip() in UNANSWERED or (stub.strip() and _normal(text) == _normal(stub)):
            return "untouched"
        return "answered"

    def answers(self, book: Gradebook) -> list[Answer]:
        """Every free-text answer graded so far, item by item (course order), then by student id."""
        key = book.db.execute("SELECT COUNT(*), MAX(graded_at) FROM submissions").fetchone()
        with self._lock:
            if key == self._answers_key:
                return self._answers
        by_nb: dict[str, list[Item]] = {}
        for nb, item in self.manual_items:
            by_nb.setdefault(nb.id, []).append(item)
        found: dict[tuple[str, str], Answer] = {}
        if by_nb:
            marks = ",".join("?" * len(by_nb))
            rows = book.db.execute(f"SELECT student_id, notebook_id, json_extract(detail, '$.manual') FROM submissions "
                                   f"WHERE notebook_id IN ({marks})", list(by_nb)).fetchall()
            for student, nb_id, manual in rows:
                try:
                    manual = json.loads(manual) if manual else {}
                except ValueError:
                    manual = {}
                nb = self.course.notebook(nb_id)
                for item in by_nb[nb_id]:
                    text = manual.get(item.id, "") if isinstance(manual, dict) else ""
                    text = text if isinstance(text, str) else ""
                    found[(student, item.id)] = Answer(item.id, nb_id, student, text,
                                                       self.state_of(nb, item.id, text))
        order = {item.id: n for n, (_, item) in enumerate(self.manual_items)}
        answers = sorted(found.values(), key=lambda a: (order[a.item_id], a.student))
        with self._lock:
            self._answers_key, self._answers = key, answers
        return answers

    def progress(self, book: Gradebook) -> tuple[int, int]:
        """(answers graded by hand, answers)."""
        answers = self.answers(book)
        grades = book.manual_grades()
        return sum(a.key in grades for a in answers), len(answers)

    def submission_path(self, student: str, nb: Notebook) -> tuple[Path | None, str]:
        """The submitted notebook, read safely (no links, nothing outside SUBMITTED), or (None, why not)."""
        if self.submitted is None:
            return None, ("The notebook itself is shown when the review is started with <code>--submitted "
                          "SUBMITTED</code> (the folder that was graded).")
        top = self.submitted.resolve()
        path = self.submitted / student / nb.path
        for part in (self.submitted / student, path.parent, path):
            if part.is_symlink():
                return None, f"<code>{e(str(part))}</code> is a link; not shown."
        if not path.is_file():
            return None, f"<code>{e(str(path))}</code>: no such file."
        if not path.resolve().is_relative_to(top):
            return None, f"<code>{e(str(path))}</code> is outside SUBMITTED; not shown."
        return path, ""


# ---------------------------------------------------------------- page frame

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;line-height:1.4;background:#fafafa}
a{color:#1f5fa8}
header.top{display:flex;gap:1.5em;align-items:center;padding:.5em 1.2em;background:#23395d;color:#fff}
header.top a{color:#fff;text-decoration:none;font-weight:600}header.top a.here{text-decoration:underline}
header.top .course{font-weight:400;opacity:.8;margin-left:auto;font-size:.9em}
#progress{font-variant-numeric:tabular-nums}
.meter{display:inline-block;width:120px;height:.55em;background:#ffffff44;border-radius:3px;vertical-align:middle;margin-left:.4em}
.meter>span{display:block;height:100%;background:#7fd48b;border-radius:3px}
main{padding:1em 1.2em;max-width:1400px;margin:0 auto}
.grading{display:grid;grid-template-columns:250px minmax(0,1fr) 380px;gap:1.2em;align-items:start}
nav.answers{font-size:.88em;background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5em;max-height:85vh;overflow:auto}
nav.answers h3{font-size:1em;margin:.6em 0 .2em}nav.answers ol{list-style:none;padding:0;margin:0}
nav.answers li a{display:flex;justify-content:space-between;padding:.1em .4em;border-radius:4px;text-decoration:none;color:#222}
nav.answers li a>span:first-child{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
nav.answers li a.here{background:#dbe8f8;font-weight:600}
.st{font-variant-numeric:tabular-nums;color:#6b6b6b;flex-shrink:0;margin-left:.5em}.st.done{color:#17702b}.st.flag{color:#b3261e}
.panel{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin-bottom:1em}
.panel h2{margin:.1em 0 .4em;font-size:1.2em}.panel h3{margin:.3em 0;font-size:1em;color:#444}
.question{background:#f3f5f8}
.answer{overflow-wrap:anywhere}.answer pre,.cell pre{white-space:pre-wrap;overflow-wrap:anywhere}
.badge{display:inline-block;font-size:.8em;border-radius:3px;padding:0 .4em;background:#eee}
.badge.untouched,.badge.empty{background:#fdecea;color:#b3261e;font-weight:600}
.badge.answered{background:#e3f0e6;color:#17702b}
form.grade label{display:block;margin:.4em 0 .1em;font-weight:600}
form.grade input[type=number]{font-size:1.6em;width:5em;padding:.1em .3em}
form.grade textarea{width:100%;min-height:5em;font:inherit}
button{font:inherit;padding:.3em .8em;border-radius:4px;border:1px solid #888;background:#f4f4f4;cursor:pointer}
button.primary{background:#1f5fa8;color:#fff;border-color:#1f5fa8}button.primary kbd{color:#222}
.rubric-line{display:block;width:100%;text-align:left;margin:.25em 0;background:#fff}
.rubric-line b{display:inline-block;min-width:3.2em}.rubric-line.picked{border-color:#1f5fa8;background:#eef4fb}
kbd{border:1px solid #bbb;border-bottom-width:2px;border-radius:3px;padding:0 .3em;font-size:.85em;background:#fff}
.keys{font-size:.85em;color:#555}
.flash{padding:.5em .8em;border-radius:5px;margin-bottom:.8em;border-left:4px solid}
.flash.ok{background:#e3f0e6;border-color:#17702b}.flash.warn{background:#fff4e5;border-color:#f0a030}
.flash.error{background:#fdecea;border-color:#b3261e}
.cut{color:#b3261e;font-size:.9em}.muted{color:#6b6b6b}
table{border-collapse:collapse;width:100%;margin:.5em 0;background:#fff}
td,th{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}th{background:#f6f7f9}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.cell{border-left:3px solid #ddd;margin:.5em 0;padding:.1em .7em;background:#fff}
.cell.code{border-color:#9ab}.cell .prompt{font-size:.8em;color:#888}
.cell pre.src{background:#f6f6f6;padding:.5em;margin:.2em 0}
.cell .output{border-top:1px dashed #ddd;margin-top:.2em}.cell .output img{max-width:100%}
.cell.answer-cell{border-color:#f0a030}
.itempanel{border:1px solid #c9d6e8;background:#f5f9fe;border-radius:6px;padding:.4em .8em;margin:.4em 0 1em 1.5em}
.itempanel h4{margin:.2em 0}
.mistake{background:#fff4e5;border-left:4px solid #f0a030;padding:.4em .8em;margin:.4em 0}
.stopped{background:#fdecea;border-left:4px solid #b3261e;padding:.4em .8em;margin:.4em 0}
.advice{background:#eef4fb;border-left:4px solid #1f5fa8;padding:.4em .8em;margin:.4em 0}
figure{margin:.6em 0 1em}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
.case{margin:.3em 0 .2em}.tag{font-size:.8em;border-radius:3px;padding:0 .35em;background:#eee;color:#444}
.tag.public{background:#e3f0e6}.tag.hidden{background:#ececf4}
.pass{color:#17702b}.fail{color:#b3261e}
.bar{display:inline-block;width:80px;height:.6em;background:#eee;border-radius:3px;margin-left:.5em;vertical-align:middle}
.bar>span{display:block;height:100%;border-radius:3px}
section.report h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.students a{margin-right:.4em}
"""

GRADE_JS = r"""
(function () {
  var body = document.body, form = document.getElementById('grade-form');
  if (!form) return;
  var points = form.elements.namedItem('points'), comment = form.elements.namedItem('comment');
  var max = parseFloat(points.getAttribute('max')), note = document.getElementById('keynote'), sent = false;
  var lines = Array.prototype.slice.call(document.querySelectorAll('.rubric-line'));
  function say(text) { note.textContent = text; }
  function go(url) { if (url) { window.location.assign(url); } else { say('no more answers that way'); } }
  function pick(line) {
    points.value = line.dataset.points; comment.value = line.dataset.comment;
    lines.forEach(function (b) { b.classList.toggle('picked', b === line); });
    say('rubric line ' + line.dataset.index + ': ' + line.dataset.points + ' points; Enter saves');
  }
  function save() { if (!sent && form.reportValidity()) { sent = true; form.requestSubmit(); } }
  form.addEventListener('submit', function () { sent = true; });
  lines.forEach(function (b) { b.addEventListener('click', function () { pick(b); b.blur(); }); });
  document.addEventListener('keydown', function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.isComposing) return;
    var t = ev.target, tag = t && t.tagName;
    if (tag === 'TEXTAREA' || tag === 'INPUT' || tag === 'SELECT') {
      if (ev.key === 'Escape') { t.blur(); return; }
      if (t === comment && ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); save(); }
      return;  /* Enter in the points field submits the form itself */
    }
    if ((tag === 'BUTTON' || tag === 'A' || tag === 'SUMMARY') && (ev.key === 'Enter' || ev.key === ' ')) return;
    var m = /^(?:Digit|Numpad)([0-9])$/.exec(ev.code || '');
    if (m) {
      var d = parseInt(m[1], 10);
      ev.preventDefault();
      if (ev.shiftKey) { if (lines[d - 1]) { pick(lines[d - 1]); } else { say('no rubric line ' + d); } return; }
      if (d <= max) { points.value = String(d); say(d + ' of ' + max + ' points; Enter saves'); }
      else { say('at most ' + max + ' points'); }
      return;
    }
    switch (ev.key) {
      case 'j': case 'ArrowRight': ev.preventDefault(); go(body.dataset.next); break;
      case 'k': case 'ArrowLeft': ev.preventDefault(); go(body.dataset.prev); break;
      case 'u': ev.preventDefault(); go(body.dataset.nextUngraded); break;
      case 'c': ev.preventDefault(); comment.focus(); break;
      case 'Enter': ev.preventDefault(); save(); break;
    }
  });
})();
"""


def page(app: Review, title: str, here: str, body: str, nonce: str, progress: tuple[int, int] | None = None,
         script: str = "", data: dict | None = None) -> str:
    done, total = progress or (0, 0)
    meter = (f"<span id='progress'>graded {done}/{total}</span><span class='meter' aria-hidden='true'>"
             f"<span style='width:{100 * done / max(total, 1):.0f}%'></span></span>") if progress else ""
    links = [("grade", "/grade", "Grade by hand"), ("class", "/class", "Class")]
    nav = " ".join(f"<a href='{href}'{' class=here' if key == here else ''}>{label}</a>" for key, href, label in links)
    attrs = "".join(f" data-{k}='{e(v)}'" for k, v in (data or {}).items() if v is not None)
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{e(title)}</title><style>{CSS}</style></head><body{attrs}>"
            f"<header class='top'>{nav}<span>{meter}</span><span class='course'>{e(app.course.name)}</span></header>"
            f"<main>{body}</main>"
            + (f"<script nonce='{nonce}'>{script}</script>" if script else "") + "</body></html>")


def _flash_html(flash: tuple[str, str] | None) -> str:
    if not flash:
        return ""
    kind, text = flash
    return f"<div id='flash' class='flash {e(kind)}' role='status'>{text}</div>"


def grade_url(item_id: str, student: str, **extra) -> str:
    return "/grade?" + urlencode({"item": item_id, "student": student, **extra})


# ---------------------------------------------------------------- grading page

def grade_page(app: Review, book: Gradebook, query: dict, nonce: str) -> tuple[int, str]:
    answers = app.answers(book)
    grades = book.manual_grades()
    graded = sum(a.key in grades for a in answers)
    flash = app.flash_of(query.get("flash"))
    if not answers:
        body = (_flash_html(flash) + "<div class='panel'><h2>Nothing to grade by hand</h2><p>No free-text answer "
                "has been graded yet: run <code>python -m autograder grade SUBMITTED --out OUT</code> first.</p></div>")
        return 200, page(app, "Grade by hand", "grade", body, nonce, (0, 0))
    where = {(a.item_id, a.student): n for n, a in enumerate(answers)}
    index = where.get((query.get("item", ""), query.get("student", "")))
    if index is None:
        wanted = [n for n, a in enumerate(answers) if a.item_id == query.get("item")] or range(len(answers))
        index = next((n for n in wanted if answers[n].key not in grades), wanted[0])
    a = answers[index]
    nb, item = app.course.item(a.item_id)
    question, _ = app.release_text(nb, item.id)
    current = grades.get(a.key)
    rubric = book.rubric(item.id)
    log = book.manual_log(a.student, a.item_id)
    after = answers[index + 1:] + answers[:index]
    ungraded = next((x for x in after if x.key not in grades), None)
    item_answers = [x for x in answers if x.item_id == item.id]
    unanswered = [x for x in item_answers if x.state != "answered" and x.key not in grades]
    data = {"next": grade_url(answers[index + 1].item_id, answers[index + 1].student) if index + 1 < len(answers)
            else None,
            "prev": grade_url(answers[index - 1].item_id, answers[index - 1].student) if index else None,
            "next-ungraded": grade_url(ungraded.item_id, ungraded.student) if ungraded else None,
            "student": a.student, "item": a.item_id, "state": a.state}

    # The list of answers, item by item.
    side = ["<nav class='answers' aria-label='answers'>"]
    for _, m_item in app.manual_items:
        rows = [x for x in answers if x.item_id == m_item.id]
        if not rows:
            continue
        done = sum(x.key in grades for x in rows)
        side.append(f"<h3>{e(m_item.id)} <span class='muted'>{done}/{len(rows)}</span></h3><ol>")
        for x in rows:
            g = grades.get(x.key)
            if g is not None:
                status = f"<span class='st done'>{_fmt(g[0])}</span>"
            elif x.state != "answered":
                flag = "stub" if x.state == "untouched" else "empty"
                status = f"<span class='st flag' title='{x.state}'>{flag}</span>"
            else:
                status = "<span class='st'>&middot;</span>"
            here = " class='here' aria-current='true'" if x is a else ""
            side.append(f"<li><a{here} href='{e(grade_url(x.item_id, x.student))}'><span>{e(x.student)}</span>"
                        f"{status}</a></li>")
        side.append("</ol>")
    side.append("</nav>")

    # The question and the answer.
    text, cut = shown(a.text)
    badge = {"answered": "answered", "empty": "empty: no answer", "untouched": "untouched: still the stub"}[a.state]
    centre = [_flash_html(flash),
              f"<div class='panel'><h2>{e(item.id)} <span class='muted'>&middot; {e(nb.title)} &middot; "
              f"{_fmt(item.points)} points</span></h2><p class='muted'>answer {index + 1} of {len(answers)} "
              f"&middot; student <a href='/student/{e(quote(a.student))}#nb-{e(nb.id)}'><b id='student'>"
              f"{e(a.student)}</b></a></p></div>"]
    if question:
        centre.append(f"<div class='panel question'><h3>Question</h3>{markdown_html(question)}</div>")
    centre.append(f"<div class='panel'><h3>Answer <span class='badge {a.state}' id='state'>{badge}</span></h3>"
                  f"<div id='answer' class='answer' data-state='{a.state}'>"
                  f"{markdown_html(text) if text.strip() else '<p class=muted>(empty)</p>'}{cut}</div></div>")
    if len(log) > 1:
        centre.append("<details class='panel'><summary>Saved " + str(len(log)) + " times</summary><ul>" + "".join(
            f"<li>{_when(x['entered_at'])}: {_fmt(x['points'])} points"
            f"{' &mdash; ' + e(x['comment']) if x['comment'] else ''}"
            f"{' <b>(overwrote a grade saved in another tab)</b>' if x['overwrote_at'] else ''}</li>"
            for x in log) + "</ul></details>")

    # The form, the rubric, the keys.
    version = repr(current[2]) if current else ""
    value = _fmt(current[0]) if current else ""
    status = (f"saved at {_when(current[2])}: <b>{_fmt(current[0])}</b> of {_fmt(item.points)}" if current
              else "not graded yet")
    hidden = "".join(f"<input type='hidden' name='{k}' value='{e(v)}'>" for k, v in
                     (("csrf", app.csrf), ("item", a.item_id), ("student", a.student), ("version", version)))
    right = [f"<div class='panel'><form id='grade-form' class='grade' method='post' action='/grade'>{hidden}"
             f"<p class='muted' id='saved'>{status}</p>"
             f"<label for='points'>Points (0 to {_fmt(item.points)})</label>"
             f"<input type='number' id='points' name='points' min='0' max='{item.points:g}' step='any' required "
             f"value='{e(value)}'> <span class='muted'>/ {_fmt(item.points)}</span>"
             f"<label for='comment'>Comment</label><textarea id='comment' name='comment' maxlength='{MAX_COMMENT}'>"
             f"{e(current[1]) if current else ''}</textarea>"
             "<p><button type='submit' class='primary'>Save and next <kbd>Enter</kbd></button></p></form>"
             "<p id='keynote' class='muted' aria-live='polite'></p></div>"]
    if unanswered:
        right.append(f"<div class='panel'><form id='zero-form' method='post' action='/grade/zero'>"
                     f"<input type='hidden' name='csrf' value='{e(app.csrf)}'>"
                     f"<input type='hidden' name='item' value='{e(item.id)}'>"
                     f"<input type='hidden' name='student' value='{e(a.student)}'>"
                     f"<button type='submit'>Give 0 to the {len(unanswered)} empty or untouched "
                     f"answer{'s' if len(unanswered) != 1 else ''} of {e(item.id)}</button></form>"
                     "<p class='muted'>(not yet graded; comment &ldquo;no answer&rdquo;)</p></div>")
    right.append("<div class='panel'><h3>Rubric</h3>")
    if rubric:
        for n, line in enumerate(rubric, start=1):
            key = f" <kbd>Shift+{n}</kbd>" if n <= 9 else ""
            right.append(f"<button type='button' class='rubric-line' data-index='{n}' "
                         f"data-points='{line['points']:g}' data-comment='{e(line['comment'])}'>"
                         f"<b>{_fmt(line['points'])} pt</b> {e(line['comment'])}{key}</button>")
    else:
        right.append("<p class='muted'>No rubric yet for this item.</p>")
    text_rubric = "\n".join(f"{line['points']:g} | {line['comment']}" for line in rubric)
    right.append(f"<details{'' if rubric else ' open'}><summary>Edit the rubric of {e(item.id)}</summary>"
                 f"<form id='rubric-form' method='post' action='/rubric'>"
                 f"<input type='hidden' name='csrf' value='{e(app.csrf)}'>"
                 f"<input type='hidden' name='item' value='{e(item.id)}'>"
                 f"<input type='hidden' name='student' value='{e(a.student)}'>"
                 f"<p class='muted'>One line each: <code>points | comment</code>.</p>"
                 f"<textarea name='rubric' rows='5' style='width:100%'>{e(text_rubric)}</textarea>"
                 "<p><button type='submit'>Save the rubric</button></p></form></details></div>")
    right.append("<div class='panel keys'><kbd>j</kbd>/<kbd>&rarr;</kbd> next &middot; <kbd>k</kbd>/<kbd>&larr;"
                 "</kbd> previous &middot; <kbd>u</kbd> next ungraded<br><kbd>0</kbd>&ndash;<kbd>9</kbd> points "
                 "&middot; <kbd>Shift</kbd>+<kbd>1</kbd>&ndash;<kbd>9</kbd> rubric line &middot; <kbd>c</kbd> "
                 "comment<br><kbd>Enter</kbd> save and next &middot; <kbd>Esc</kbd> leave a field</div>")
    body = ("<div class='grading'>" + "".join(side) + "<section>" + "".join(centre) + "</section><aside>"
            + "".join(right) + "</aside></div>")
    return 200, page(app, f"Grade {item.id}: {a.student}", "grade", body, nonce, (graded, len(answers)),
                     GRADE_JS, data)


def parse_points(text: str, item: Item) -> float:
    """Points typed by the grader: a number from 0 to the item's points (ValueError says what is wrong)."""
    text = (text or "").strip().replace(",", ".")
    if not text:
        raise ValueError(f"enter points from 0 to {_fmt(item.points)}")
    try:
        points = float(text)
    except ValueError:
        raise ValueError(f"points {text[:20]!r} is not a number") from None
    if not math.isfinite(points) or not 0 <= points <= item.points:
        raise ValueError(f"points {text[:20]} is outside 0..{_fmt(item.points)} for {item.id}")
    return points


def save_grade(app: Review, book: Gradebook, form: dict) -> str:
    """POST /grade: save one grade, then go to the next answer (or stay, on an error). Returns the redirect."""
    answers = app.answers(book)
    where = {(a.item_id, a.student): n for n, a in enumerate(answers)}
    item_id, student = form.get("item", ""), form.get("student", "")
    index = where.get((item_id, student))
    if index is None:
        return "/grade?" + urlencode({"flash": app.flash("error", "No such answer: nothing saved.")})
    nb, item = app.course.item(item_id)
    here = grade_url(item_id, student)
    try:
        points = parse_points(form.get("points", ""), item)
        version = form.get("version", "").strip()
        loaded = float(version) if version else None
    except ValueError as exc:
        return grade_url(item_id, student, flash=app.flash("error", f"Not saved: {e(str(exc))}."))
    comment = form.get("comment", "").strip()[:MAX_COMMENT]
    done = book.set_manual(student, item_id, points, comment, loaded)
    text = f"Saved {e(student)} / {e(item_id)}: {_fmt(points)} of {_fmt(item.points)}."
    kind = "ok"
    if done["overwrote"]:
        old = done["overwrote"]
        kind = "warn"
        if old["points"] is None:
            text += " This overwrote a change made in another tab meanwhile (the grade had been cleared)."
        else:
            text += (f" This overwrote a grade saved at {_when(old['entered_at'])} in another tab "
                     f"({_points(old['points'])}{': ' + e(old['comment']) if old['comment'] else ''}).")
    key = app.flash(kind, text)
    if form.get("go") == "stay" or index + 1 >= len(answers):
        return grade_url(item_id, student, flash=key)
    nxt = answers[index + 1]
    return grade_url(nxt.item_id, nxt.student, flash=key)


def zero_unanswered(app: Review, book: Gradebook, form: dict) -> str:
    """POST /grade/zero: 0 points ("no answer") for every empty or untouched, ungraded answer of an item."""
    item_id, student = form.get("item", ""), form.get("student", "")
    grades = book.manual_grades()
    todo = [a for a in app.answers(book) if a.item_id == item_id and a.state != "answered" and a.key not in grades]
    for a in todo:
        book.set_manual(a.student, a.item_id, 0.0, "no answer", None)
    key = app.flash("ok", f"Gave 0 points to {len(todo)} empty or untouched answer{'s' if len(todo) != 1 else ''} "
                          f"of {e(item_id)}.")
    return grade_url(item_id, student, flash=key)


RUBRIC_LINE = re.compile(r"^\s*([0-9]+(?:[.,][0-9]+)?)\s*\|\s*(.*?)\s*$")


def save_rubric(app: Review, book: Gradebook, form: dict) -> str:
    """POST /rubric: replace an item's rubric, from lines `points | comment`."""
    item_id, student = form.get("item", ""), form.get("student", "")
    manual = {it.id: it for _, it in app.manual_items}
    if item_id not in manual:
        return "/grade?" + urlencode({"flash": app.flash("error", "No such free-text item: rubric not saved.")})
    lines, problems = [], []
    for n, raw in enumerate(form.get("rubric", "").splitlines(), start=1):
        if not raw.strip():
            continue
        m = RUBRIC_LINE.match(raw)
        if not m:
            problems.append(f"line {n}: write <code>points | comment</code>")
            continue
        points = float(m.group(1).replace(",", "."))
        if points > manual[item_id].points:
            problems.append(f"line {n}: {_fmt(points)} is more than the item's {_fmt(manual[item_id].points)} points")
            continue
        lines.append({"points": points, "comment": m.group(2)[:MAX_COMMENT]})
    if problems:
        key = app.flash("error", "Rubric not saved: " + "; ".join(problems) + ".")
    else:
        book.set_rubric(item_id, lines)
        key = app.flash("ok", f"Saved the rubric of {e(item_id)} ({len(lines)} line{'s' if len(lines) != 1 else ''}).")
    return grade_url(item_id, student, flash=key)


# ---------------------------------------------------------------- submission view

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")


def _joined(value) -> str:
    if isinstance(value, list):
        return "".join(v for v in value if isinstance(v, str))
    return value if isinstance(value, str) else ""


def _pre(text: str, cls: str = "") -> str:
    text, cut = shown(text, 20_000)
    return f"<pre{' class=' + cls if cls else ''}>{e(text)}</pre>{cut}"


def outputs_html(outputs) -> str:
    """A code cell's saved outputs: text as text, PNG and JPEG pictures as data; HTML and scripts never."""
    if not isinstance(outputs, list):
        return ""
    parts = []
    for out in outputs[:MAX_OUTPUTS]:
        if not isinstance(out, dict):
            continue
        kind = out.get("output_type")
        if kind == "stream":
            parts.append(_pre(_joined(out.get("text"))))
        elif kind in ("execute_result", "display_data"):
            data = out.get("data") if isinstance(out.get("data"), dict) else {}
            for mime in ("image/png", "image/jpeg"):
                raw = _joined(data.get(mime))
                if raw and len(raw) < 8_000_000 and BASE64.fullmatch(raw):
                    parts.append(f"<img alt='output' src='data:{mime};base64,{''.join(raw.split())}'>")
                    break
            else:
                parts.append(_pre(_joined(data.get("text/plain"))))
        elif kind == "error":
            lines = out.get("traceback") if isinstance(out.get("traceback"), list) else []
            text = "\n".join(ANSI.sub("", x) for x in lines if isinstance(x, str))
            parts.append(_pre(text or f"{_joined(out.get('ename'))}: {_joined(out.get('evalue'))}", "fail"))
    if len(outputs) > MAX_OUTPUTS:
        parts.append(f"<p class='cut'>({len(outputs) - MAX_OUTPUTS} more outputs not shown)</p>")
    return "".join(f"<div class='output'>{p}</div>" for p in parts)


def cells_html(nb_json: dict, panels: dict[str, str], manual_ids: set[str]) -> tuple[list[str], set[str]]:
    """The notebook's cells, read-only, each item's panel after the cell with its grade_id; and the ids placed."""
    from . import notebook

    parts, placed = [], set()
    count = 0
    for cell in nb_json.get("cells", []):
        if not isinstance(cell, dict):
            continue
        kind, source = cell.get("cell_type"), cell.get("source", "")
        source = source if isinstance(source, str) else _joined(source)
        gid = notebook.grade_id(cell)
        extra = " answer-cell" if gid in manual_ids else ""
        if kind == "markdown":
            text, cut = shown(source)
            parts.append(f"<div class='cell md{extra}'>{markdown_html(text)}{cut}</div>")
        elif kind == "code":
            count += 1
            parts.append(f"<div class='cell code{extra}'><div class='prompt'>[{count}]"
                         f"{' ' + e(gid) if gid else ''}</div>{_pre(source, 'src')}"
                         f"{outputs_html(cell.get('outputs'))}</div>")
        else:
            parts.append(f"<div class='cell raw'>{_pre(source)}</div>")
        if gid in panels and gid not in placed:
            parts.append(panels[gid])
            placed.add(gid)
    return parts, placed


def item_panel(item: dict, student: str) -> str:
    """One graded item, as the feedback page shows it: score, named mistakes, pictures, failing cases."""
    from . import report

    score = (f"{_fmt(item['score'])} / {_fmt(item['max_score'])}"
             f"{report._bar(item['score'], item['max_score'])}")
    if item.get("manual"):
        link = grade_url(item["id"], student)
        if item.get("graded_by_hand"):
            note = f"graded by hand: <b>{score}</b>"
            if item.get("manual_comment"):
                note += f" &mdash; {e(item['manual_comment'])}"
        else:
            note = "not graded by hand yet"
        return (f"<div class='itempanel' id='item-{e(item['id'])}' data-item='{e(item['id'])}'><h4>"
                f"{e(item['id'])} <span class='tag'>free text</span></h4><p>{note} &middot; "
                f"<a href='{e(link)}'>grade it</a></p></div>")
    if item["score"] >= item["max_score"] and not item["message"]:
        passed = sum(c["passed"] for c in item["cases"])
        return (f"<div class='itempanel' id='item-{e(item['id'])}' data-item='{e(item['id'])}'><h4>{e(item['id'])}: "
                f"<span class='pass'>{score}</span></h4><p class='muted'>full marks: {passed} of "
                f"{len(item['cases'])} cases passed</p></div>")
    inner = "\n".join(report._item_html(item))
    return f"<div class='itempanel' data-item='{e(item['id'])}'>{inner}</div>"


def student_page(app: Review, book: Gradebook, student: str, nonce: str) -> tuple[int, str]:
    from . import notebook

    students = book.students()
    if student not in students:
        return 404, page(app, "No such student", "class", f"<div class='panel'><h2>No student "
                         f"{e(student)}</h2><p><a href='/class'>the class</a></p></div>", nonce)
    results = book.results_with_manual(student)
    total = sum(i["score"] for nb in results for i in nb["items"])
    possible = sum(i["max_score"] for nb in results for i in nb["items"] if not i.get("extra_credit"))
    at = students.index(student)
    around = " &middot; ".join(
        f"<a href='/student/{e(quote(s))}'>{label}</a>" for s, label in
        ((students[at - 1] if at else None, "&larr; previous student"),
         (students[at + 1] if at + 1 < len(students) else None, "next student &rarr;")) if s)
    body = [f"<div class='panel'><h2>{e(student)}: <span id='total'>{_fmt(total)}</span> of {_fmt(possible)} "
            f"points</h2><p class='muted'>{around} &middot; <a href='/class'>the class</a>. Read-only: the "
            "notebook as submitted, with its outputs as the student saved them; each item's grade is beside the "
            "cell that defines it. Hidden cases are named and described, never shown.</p>"
            "<table><tr><th>notebook</th><th>score</th><th>status</th></tr>"]
    for nb in results:
        nb_score = sum(i["score"] for i in nb["items"])
        nb_max = sum(i["max_score"] for i in nb["items"] if not i.get("extra_credit"))
        body.append(f"<tr><td><a href='#nb-{e(nb['notebook_id'])}'>{e(nb['title'])}</a></td>"
                    f"<td class='num'>{_fmt(nb_score)} / {_fmt(nb_max)}</td><td>{e(nb['status'])}</td></tr>")
    body.append("</table></div>")
    manual_ids = {it.id for _, it in app.manual_items}
    for nb_result in results:
        try:
            nb = app.course.notebook(nb_result["notebook_id"])
        except Exception:  # noqa: BLE001 - a notebook no longer in course.yml
            continue
        nb_score = sum(i["score"] for i in nb_result["items"])
        nb_max = sum(i["max_score"] for i in nb_result["items"] if not i.get("extra_credit"))
        body.append(f"<section class='panel notebook' id='nb-{e(nb.id)}'><h2>{e(nb.title)}: {_fmt(nb_score)} / "
                    f"{_fmt(nb_max)}</h2>")
        if nb_result["status"] != "graded":
            body.append(f"<p class='stopped'>{e(nb_result['message'])}</p>")
        for problem in nb_result.get("cell_problems") or []:
            body.append(f"<p class='stopped'>When graded, cell {int(problem['index']) + 1} failed: "
                        f"<code>{e(str(problem['error']))}</code></p>")
        panels = {item["id"]: item_panel(item, student) for item in nb_result["items"]}
        path, why = app.submission_path(student, nb)
        placed: set[str] = set()
        if path is not None:
            try:
                nb_json = notebook.read(path)
            except notebook.NotebookError as exc:
                body.append(f"<p class='stopped'>{e(str(exc))}</p>")
            else:
                graded_at = book.db.execute("SELECT graded_at FROM submissions WHERE student_id=? AND notebook_id=?",
                                            (student, nb.id)).fetchone()
                if graded_at and path.stat().st_mtime > graded_at[0] + 1:
                    body.append("<p class='stopped'>This file changed after it was graded: the grades below are "
                                "those of the earlier version.</p>")
                cells, placed = cells_html(nb_json, panels, manual_ids)
                body.extend(cells)
        else:
            body.append(f"<p class='muted'>{why}</p>")
            for item in nb_result["items"]:
                if item.get("manual"):
                    answer = (nb_result.get("manual") or {}).get(item["id"], "")
                    text, cut = shown(answer if isinstance(answer, str) else "")
                    body.append(f"<div class='cell md answer-cell'>{markdown_html(text)}{cut}</div>")
                body.append(panels.pop(item["id"]))
        body.extend(p for gid, p in panels.items() if gid not in placed)
        body.append("</section>")
    return 200, page(app, f"Submission: {student}", "class", "".join(body), nonce, app.progress(book))


# ---------------------------------------------------------------- class view

def _links(students: list[str]) -> str:
    return " ".join(f"<a href='/student/{e(quote(s))}'>{e(s)}</a>" for s in sorted(students))


def class_page(app: Review, book: Gradebook, nonce: str) -> tuple[int, str]:
    """Every student's points (linked), then the class report's tables (its figures are in OUT/report.html)."""
    import statistics

    from . import classreport
    from .report import WithManual

    students = book.students()
    answers = app.answers(book)
    grades = book.manual_grades()
    notebooks = app.course.notebooks
    stats, totals, _ = classreport.collect(app.course, WithManual(book))
    rows = []
    for student in students:
        cells, total = [], 0.0
        for nb in notebooks:
            score = totals.get(nb.id, {}).get(student)
            if score is None:
                cells.append("<td class='num muted'>&ndash;</td>")
                continue
            total += score
            cells.append(f"<td class='num'>{_fmt(score)}</td>")
        mine = [a for a in answers if a.student == student]
        hand = f"{sum(a.key in grades for a in mine)}/{len(mine)}" if mine else "&ndash;"
        rows.append(f"<tr><td><a href='/student/{e(quote(student))}'>{e(student)}</a></td>{''.join(cells)}"
                    f"<td class='num'><b>{_fmt(total)}</b></td><td class='num'>{hand}</td></tr>")

    def top(nb: Notebook) -> float:
        return sum(i.points for i in nb.items if not i.extra_credit)

    head = "".join(f"<th title='{e(nb.title)}'>{e(nb.id.split('_')[0])} /{_fmt(top(nb))}</th>" for nb in notebooks)
    body = [f"<section class='panel' id='students'><h2>Students ({len(students)})</h2><p class='muted'>Points per "
            "notebook, hand grades included, before late penalties. Each name opens the submission. The class "
            "report with its figures is <code>OUT/report.html</code> (<code>python -m autograder report OUT</code>)."
            f"</p><table><tr><th>student</th>{head}<th>total</th><th>graded by hand</th></tr>{''.join(rows)}"
            "</table></section>"]

    graded_nbs = [nb for nb in notebooks if totals.get(nb.id)]
    body.append("<section class='panel report' id='totals'><h2>Notebook totals</h2><table><tr><th>notebook</th>"
                "<th>students</th><th>points</th><th>mean</th><th>median</th><th>full marks</th></tr>")
    for nb in graded_nbs:
        values = list(totals[nb.id].values())
        body.append(f"<tr><td>{e(nb.title)}</td><td class='num'>{len(values)}</td><td class='num'>{_fmt(top(nb))}"
                    f"</td><td class='num'>{statistics.fmean(values):.2f}</td><td class='num'>"
                    f"{_fmt(statistics.median(values))}</td><td class='num'>{sum(v >= top(nb) for v in values)}"
                    "</td></tr>")
    body.append("</table></section>")

    ranked = classreport.ranked_mistakes(stats)
    body.append("<section class='panel report' id='mistakes'><h2>Most common diagnosed mistakes</h2>")
    if ranked:
        body.append("<table><tr><th>item</th><th>mistake</th><th>students</th><th>who</th></tr>")
        for st, name, m in ranked:
            body.append(f"<tr><td>{e(st.item)}</td><td><b>{e(m['title'])}</b> <span class='muted'>({e(name)})"
                        f"</span></td><td class='num'>{len(m['students'])}</td><td class='students'>"
                        f"{_links(m['students'])}</td></tr>")
        body.append("</table>")
    else:
        body.append("<p>No known mistake was diagnosed.</p>")
    body.append("</section>")

    causes = classreport.CAUSES
    failing = classreport.failing_items(stats)
    body.append("<section class='panel report' id='failing'><h2>Items most students fail</h2>")
    if failing:
        body.append("<table><tr><th>item</th><th>failed</th>"
                    + "".join(f"<th>{e(classreport.CAUSE_NAMES[c])}</th>" for c in causes) + "</tr>")
        for st in failing:
            body.append(f"<tr><td>{e(st.item)}</td><td class='num'>{len(st.failed)} of {len(st.scores)}</td>"
                        + "".join(f"<td class='students'>{f'<b>{len(st.causes[c])}</b>: ' if st.causes[c] else ''}"
                                  f"{_links(st.causes[c])}</td>" for c in causes) + "</tr>")
        body.append("</table>")
    else:
        body.append("<p>Every student has full marks on every auto-graded item.</p>")
    body.append("</section>")

    body.append("<section class='panel report' id='distributions'><h2>Items</h2><table><tr><th>item</th>"
                "<th>notebook</th><th>points</th><th>students</th><th>mean</th><th>full marks</th>"
                "<th>most common mistake</th></tr>")
    for st in stats:
        if not st.scores:
            continue
        best = classreport.ranked_mistakes([st])[:1]
        mistake = f"{e(best[0][2]['title'])} ({len(best[0][2]['students'])})" if best else ""
        hand = " <span class='tag'>by hand</span>" if st.manual else ""
        body.append(f"<tr><td>{e(st.item)}{hand}</td><td>{e(st.notebook)}</td><td class='num'>{_fmt(st.points)}</td>"
                    f"<td class='num'>{len(st.scores)}</td><td class='num'>{statistics.fmean(st.scores.values()):.2f}"
                    f"</td><td class='num'>{st.full_marks}</td><td>{mistake}</td></tr>")
    body.append("</table></section>")
    return 200, page(app, "Class", "class", "".join(body), nonce, app.progress(book))


# ---------------------------------------------------------------- the server

class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "autograder-review"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    @property
    def app(self) -> Review:
        return self.server.app  # type: ignore[attr-defined]

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        if getattr(self.server, "verbose", False):  # the request line only: never the token
            sys.stderr.write(f"review: {self.command} {urlsplit(self.path).path} {args[1] if len(args) > 1 else ''}\n")

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(405, "text/plain; charset=utf-8", b"method not allowed\n")

    def _send(self, status: int, ctype: str, payload: bytes, headers: dict | None = None, nonce: str = "") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "same-origin")  # no-referrer would make form posts send Origin: null
        script = f"'nonce-{nonce}'" if nonce else "'none'"
        self.send_header("Content-Security-Policy",
                         f"default-src 'none'; script-src {script}; style-src 'unsafe-inline'; img-src data:; "
                         "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def _refuse(self, status: int, why: str) -> None:
        self._send(status, "text/plain; charset=utf-8", f"{status}: {why}\n".encode())

    def _redirect(self, location: str, cookie: bool = False) -> None:
        headers = {"Location": location}
        if cookie:
            headers["Set-Cookie"] = (f"{self.app.cookie_name}={self.app.token}; HttpOnly; SameSite=Strict; "
                                     "Path=/")
        self._send(303, "text/plain; charset=utf-8", b"see other\n", headers)

    def _cookie_token(self) -> str | None:
        raw = self.headers.get("Cookie")
        if not raw:
            return None
        try:
            jar = SimpleCookie(raw)
        except CookieError:
            return None
        morsel = jar.get(self.app.cookie_name)
        return morsel.value if morsel is not None else None

    def _handle(self, method: str) -> None:
        app = self.app
        try:
            if not app.host_ok(self.headers.get("Host")):
                return self._refuse(403, "this server answers only as 127.0.0.1 or localhost")
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True, max_num_fields=50).items()}
            token = query.pop("token", None)
            if token is not None and not app.token_ok(token):
                return self._refuse(403, "wrong token; open the URL that `python -m autograder review` printed")
            if token is None and not app.token_ok(self._cookie_token()):
                return self._refuse(403, "a token is needed; open the URL that `python -m autograder review` printed")
            if method == "GET" and token is not None:  # first visit: keep the token in a cookie, not in the URL
                return self._redirect(url.path + ("?" + urlencode(query) if query else ""), cookie=True)
            if method == "POST":
                return self._post(url.path)
            return self._get(url.path, query)
        except (BrokenPipeError, ConnectionResetError):
            return None
        except Exception as exc:  # noqa: BLE001 - one bad request never stops the server
            import traceback

            traceback.print_exc()
            try:
                self._refuse(500, f"the review server failed on this request ({type(exc).__name__})")
            except OSError:
                pass

    def _get(self, path: str, query: dict) -> None:
        app = self.app
        nonce = secrets.token_urlsafe(16)
        if path == "/":
            return self._redirect("/grade")
        if path == "/favicon.ico":
            return self._refuse(404, "no icon")
        book = app.book()
        try:
            if path == "/grade":
                status, text = grade_page(app, book, query, nonce)
            elif path == "/class":
                status, text = class_page(app, book, nonce)
            elif path.startswith("/student/"):
                status, text = student_page(app, book, unquote(path[len("/student/"):]), nonce)
            else:
                return self._refuse(404, "no such page")
        finally:
            book.close()
        self._send(status, "text/html; charset=utf-8", text.encode("utf-8"), nonce=nonce)

    def _post(self, path: str) -> None:
        app = self.app
        if not app.origin_ok(self.headers.get("Origin")):
            return self._refuse(403, "a form from another site")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return self._refuse(400, "bad Content-Length")
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            return self._refuse(413, f"more than {MAX_BODY} bytes")
        raw = self.rfile.read(length).decode("utf-8", errors="replace")
        form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True, max_num_fields=50).items()}
        if not app.csrf_ok(form.get("csrf") or self.headers.get("X-CSRF-Token")):
            return self._refuse(403, "the form's CSRF token is missing or wrong; reload the page")
        actions = {"/grade": save_grade, "/grade/zero": zero_unanswered, "/rubric": save_rubric}
        if path not in actions:
            return self._refuse(404, "no such action")
        book = app.book()
        try:
            location = actions[path](app, book, form)
        finally:
            book.close()
        self._redirect(location)


class ReviewServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, app: Review, port: int, verbose: bool = False):
        super().__init__((HOST, port), Handler)
        self.app, self.verbose = app, verbose
        app.port = self.server_address[1]

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):  # a browser closing a connection
            super().handle_error(request, client_address)


def bind(app: Review, port: int | None, verbose: bool = False) -> ReviewServer:
    """A server on 127.0.0.1: on `port`, or DEFAULT_PORT (then the next nine, then any free port)."""
    if port is not None:
        return ReviewServer(app, port, verbose)
    for candidate in [*range(DEFAULT_PORT, DEFAULT_PORT + 10), 0]:
        try:
            return ReviewServer(app, candidate, verbose)
        except OSError:
            continue
    raise OSError("no free port on 127.0.0.1")


def serve(course: Course, out: Path, port: int | None = None, submitted: Path | None = None,
          verbose: bool = False) -> int:
    """`python -m autograder review`: print the URL, serve until Ctrl-C."""
    out = Path(out)
    if not (out / "gradebook.db").exists():
        print(f"error: {out / 'gradebook.db'}: no gradebook here; run python -m autograder grade first",
              file=sys.stderr)
        return 2
    if submitted is not None and not Path(submitted).is_dir():
        print(f"error: {submitted}: no such folder (the SUBMITTED folder that was graded)", file=sys.stderr)
        return 2
    app = Review(course, out, submitted)
    try:
        server = bind(app, port, verbose)
    except OSError as exc:
        print(f"error: cannot listen on {HOST}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    book = app.book()
    try:
        n = len(app.answers(book))
    finally:
        book.close()
    print(f"Reviewing {out} ({n} free-text answer{'s' if n != 1 else ''}). Open this URL in a browser "
          f"on this machine:\n\n    {app.url()}\n\nPress Ctrl-C to stop.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print(f"\nStopped. Run python -m autograder report {out} to write gradebook.csv, canvas.csv, the results and "
          "the feedback pages with the grades entered.", flush=True)
    return 0
