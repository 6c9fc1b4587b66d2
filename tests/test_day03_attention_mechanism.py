"""Days 3-5 (attention in NumPy): its demo students, its cases, and its runners."""
from __future__ import annotations

import html
import inspect

import matplotlib

matplotlib.use("Agg")
import matplotlib.figure  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from autograder.exercise import StudentError  # noqa: E402
from autograder.exercises import day03_attention_mechanism as ex  # noqa: E402
from autograder.hidden import day03_attention_mechanism as hidden  # noqa: E402
from conftest import gradebook_rows, results_of  # noqa: E402

D03 = "day03_attention_mechanism"


@pytest.fixture(scope="module")
def reference_ns():
    """The notebook's solution cells (no demos, no checks) executed in one namespace."""
    import nbformat

    from autograder import notebook
    from autograder.config import ROOT

    src = nbformat.read(ROOT / "solutions" / "week1" / f"{D03}.ipynb", as_version=4)
    ns: dict = {}
    for cell in notebook.cells_to_run(src, None):
        exec(compile(cell.source, f"<cell {cell.index}>", "exec"), ns)
    plt.close("all")
    return ns


# --- the demo class ----------------------------------------------------------

@pytest.mark.parametrize("student,item,mistake", [
    ("ivy_d03_naive_softmax", "softmax", "softmax without subtracting the maximum"),
    ("jay_d03_W_transposed", "multiplicative_score", "W is used transposed"),
    ("kai_d03_swapped_labels", "plot_attention", "the tick labels are swapped"),
    ("liv_d03_swapped_return", "attention", "returns (weights, context) instead of (context, weights)"),
    ("mia_d03_hand_no_exp", "hand_attention", "the weights are the scores divided by their sum"),
])
def test_realistic_students_lose_points_on_their_item_only(course, graded_demo, student, item, mistake):
    """Does each Days 3-5 demo student lose points on the item they got wrong, and only there,
    with the mistake named in every failing case?"""
    _, out = graded_demo
    row = gradebook_rows(out)[student]
    tests = results_of(out, student)
    for it in course.notebook(D03).auto_items:
        if it.id == item:
            assert float(row[it.id]) < it.points
        else:
            assert float(row[it.id]) == it.points, f"{student} lost points on {it.id}"
    failed = [t["output"] for name, t in tests.items() if name.startswith(item + ":") and t["status"] == "failed"]
    assert failed
    assert all(mistake in o for o in failed), failed[:2]
    page = (out / "feedback" / f"{student}.html").read_text()
    assert html.escape(mistake) in page


def test_naive_softmax_costs_points_once(keys, graded_demo):
    """Is `attention` graded with the reference softmax, so that a softmax that overflows is not
    counted again on attention's cases with scores of +-1e4?"""
    key = keys[D03]
    large = [c for c in key["attention"]["cases"] if c["name"] in ("large-scores", "huge-scores")]
    assert len(large) == 2
    naive = hidden.SOFTMAX_MISTAKES[0].impl
    with np.errstate(all="ignore"):
        assert np.isnan(naive(np.array([1e4, -1e4, 1e4 - 2.0, 0.0]))).any()  # the pitfall is real on those scores
    _, out = graded_demo
    assert float(gradebook_rows(out)["ivy_d03_naive_softmax"]["attention"]) == 2
    assert {e.id: e.needs for e in ex.EXERCISES}["attention"] == ("softmax", "dot_score")


# --- the cases -----------------------------------------------------------------

def test_softmax_cases_cover_the_edge_cases(keys):
    """Do the softmax cases include +-1e4 logits, -inf entries, n = 1 and non-last axes, and is every
    expected output finite and summing to 1 along its axis?"""
    cases = keys[D03]["softmax"]["cases"]
    xs = [c["inputs"]["x"] for c in cases]
    assert any(np.nanmax(np.abs(x[np.isfinite(x)])) >= 1e4 for x in xs)
    assert any(np.isneginf(x).any() for x in xs)
    assert any(x.shape[c["inputs"].get("axis", -1)] == 1 for x, c in zip(xs, cases))
    assert {c["inputs"].get("axis", -1) for c in cases} >= {-1, 0, 1, -2}
    assert any(c["public"] and c["inputs"].get("axis") == 0 for c in cases)
    for c in cases:
        y = c["expected"]["y"]
        assert y.dtype == np.float64 and np.isfinite(y).all(), c["name"]
        np.testing.assert_allclose(y.sum(axis=c["inputs"].get("axis", -1)), 1.0, rtol=1e-12)
        assert (y[np.isneginf(c["inputs"]["x"])] == 0).all()


def test_score_cases_have_non_square_and_square_weights(keys):
    """Do the multiplicative and additive cases include non-square weight matrices (where a transposed W
    fails) and square ones (where it is silently wrong), in public and hidden cases alike?"""
    for item, shapes in (("multiplicative_score", lambda i: [i["W"].shape]),
                         ("additive_score", lambda i: [i["W_q"].shape, i["W_k"].shape])):
        for public in (True, False):
            cases = [c for c in keys[D03][item]["cases"] if c["public"] == public]
            square = [all(a == b for a, b in shapes(c["inputs"])) for c in cases]
            assert any(square) and not all(square), (item, public)
            assert any(c["inputs"]["keys"].shape[0] == 1 for c in keys[D03][item]["cases"])


def test_attention_weights_sum_to_one_and_mask_minus_inf(keys):
    """Does the reference attention give weights summing to 1, weight 0 to -inf scores, and the context
    equal to weights @ values on every case?"""
    for c in keys[D03]["attention"]["cases"]:
        w, ctx = c["expected"]["weights"], c["expected"]["context"]
        np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)
        np.testing.assert_allclose(ctx, w @ c["inputs"]["values"], rtol=1e-12, atol=1e-12)
        if c["inputs"]["score"] == "fixed":
            assert (w[np.isneginf(c["inputs"]["scores"])] == 0).all()
    assert any(np.isneginf(c["inputs"].get("scores", np.zeros(1))).any() for c in keys[D03]["attention"]["cases"])


# --- the attention runner --------------------------------------------------------

def _attention_case(score="distance"):
    return ex.attention_inputs(np.random.default_rng(0), 5, 3, 2, score)


def test_attention_runner_insists_on_score_fn_query_keys(reference_ns):
    """Does a student who calls score_fn(keys, query) get a message that says how to call it?"""
    softmax = reference_ns["softmax"]

    def attention(query, keys, values, score_fn=None):
        weights = softmax(score_fn(keys, query))
        return weights @ values, weights

    with pytest.raises(StudentError, match=r"score_fn\(query, keys\)"):
        ex.run_attention(attention, _attention_case())
    out = ex.run_attention(reference_ns["attention"], _attention_case("fixed"))
    assert set(out) == {"context", "weights"}


def test_attention_runner_catches_ignored_score_fn(reference_ns):
    """Does an attention that always uses the dot product fail the probe cases (the pitfall cannot pass)?"""
    softmax = reference_ns["softmax"]

    def attention(query, keys, values, score_fn=None):
        weights = softmax(keys @ query)
        return weights @ values, weights

    for score in ("distance", "fixed"):
        inputs = _attention_case(score)
        got = ex.run_attention(attention, inputs)["weights"]
        want = ex.run_attention(reference_ns["attention"], inputs)["weights"]
        assert not np.allclose(got, want)


def test_public_module_gives_no_score_away():
    """Does the exercise module that ships to students avoid the formulas of the score items it grades?"""
    source = inspect.getsource(ex)
    for formula in ("tanh", "W.T", "W_k.T", "keys @ query", "query @ keys"):
        assert formula not in source, formula


# --- the plot_attention runner -----------------------------------------------------

CASE = ex.plot_case(np.random.default_rng(3), "t", 3, 5).inputs


def _plot(draw="imshow", colorbar=True, both_sides=False, returns="fig"):
    def plot_attention(weights, query_labels, key_labels):
        fig, ax = plt.subplots()
        im = getattr(ax, draw)(weights)
        ax.set_yticks(range(len(query_labels)), labels=query_labels)
        ax.set_xticks(range(len(key_labels)), labels=key_labels)
        if both_sides:
            ax.tick_params(labelbottom=True, labeltop=True)
        if colorbar:
            fig.colorbar(im, ax=ax)
        return {"fig": fig, "ax": ax, "tuple": (fig, ax)}[returns]

    return plot_attention


def test_plot_runner_reads_imshow_and_matshow_alike():
    """Do imshow and matshow (ticks on top), with labels on one side or both, give the same plain data:
    the weights, the labels as lists of str, and the colorbar?"""
    outs = [ex.run_plot(_plot(draw, both_sides=both), CASE)
            for draw in ("imshow", "matshow") for both in (False, True)]
    for out in outs:
        assert type(out["image"]) is np.ndarray and out["image"].dtype == np.float64
        np.testing.assert_array_equal(out["image"], CASE["weights"])
        assert out["y_tick_labels"] == CASE["query_labels"]
        assert out["x_tick_labels"] == CASE["key_labels"]
        assert all(type(s) is str for s in out["y_tick_labels"] + out["x_tick_labels"])
        assert out["colorbar"] is True
    assert ex.run_plot(_plot(colorbar=False), CASE)["colorbar"] is False


@pytest.mark.parametrize("returns,message", [("ax", "got Axes"), ("tuple", "got tuple")])
def test_plot_runner_wants_exactly_a_figure(returns, message):
    """Is anything but a matplotlib Figure refused with a message (an Axes, a tuple, a Figure subclass)?"""
    with pytest.raises(StudentError, match=message):
        ex.run_plot(_plot(returns=returns), CASE)

    class Fake(matplotlib.figure.Figure):
        pass

    def sneaky(weights, query_labels, key_labels):
        return Fake()

    with pytest.raises(StudentError, match="Figure"):
        ex.run_plot(sneaky, CASE)


def test_plot_runner_explains_a_missing_image():
    """Does a figure without an imshow/matshow image (a pcolormesh, say) get a message naming imshow?"""
    def pcolor(weights, query_labels, key_labels):
        fig, ax = plt.subplots()
        ax.pcolormesh(weights)
        return fig

    with pytest.raises(StudentError, match="imshow"):
        ex.run_plot(pcolor, CASE)


def test_plot_runner_closes_every_figure():
    """Does the runner close the figures a student's function opens, also when it raises, so that a
    notebook's check() neither leaks memory nor displays stray plots?"""
    plt.close("all")

    def raises(weights, query_labels, key_labels):
        plt.subplots()
        plt.figure()
        raise RuntimeError("boom")

    ex.run_plot(_plot(), CASE)
    with pytest.raises(RuntimeError):
        ex.run_plot(raises, CASE)
    assert plt.get_fignums() == []


def test_plot_mistakes_are_realistic():
    """Does each plot_attention mistake produce what a student's figure with that slip would show?"""
    base = ex.run_plot(_plot(), CASE)
    got = {m.name: ex.run_plot(m.impl, CASE) for m in hidden.MISTAKES["plot_attention"]}
    np.testing.assert_array_equal(got["transposed"]["image"], CASE["weights"].T)
    assert got["swapped_labels"]["y_tick_labels"] == CASE["key_labels"]
    assert got["swapped_labels"]["x_tick_labels"] == CASE["query_labels"]
    assert got["no_colorbar"]["colorbar"] is False
    assert got["ticks_not_set"]["x_tick_labels"] != base["x_tick_labels"]
    assert CASE["key_labels"][0] in got["ticks_not_set"]["x_tick_labels"]


def test_in_notebook_check_of_plot_attention(reference_ns, capsys):
    """Does check(plot_attention) pass on the reference, name a missing colorbar, and leave no figure open?"""
    from autograder.check import check

    plt.close("all")
    check(reference_ns["plot_attention"])
    assert capsys.readouterr().out.startswith("PASS plot_attention")
    check(hidden._plot("no_colorbar"))  # shows the failing card; does not raise
    assert "no colorbar" in capsys.readouterr().out
    assert plt.get_fignums() == []


# --- hand_attention: attention computed by hand ---------------------------------------

HAND_ITEM = "hand_attention"


def _rounded(answer: dict, decimals: int = 2) -> dict:
    """An answer as a student types it: every number rounded by hand."""
    return {name: [round(float(x), decimals) for x in numbers] for name, numbers in answer.items()}


def _judge_hand(key, answer) -> list:
    """The grader's verdict on an answer (every case of the item, as when grading)."""
    from autograder import compare
    from autograder.sandbox import _fresh, _plain_outputs

    item = key[D03][HAND_ITEM]
    raw = {}
    for case in item["cases"]:
        got = {"outputs": None, "error": "", "error_type": ""}
        try:
            got["outputs"] = _plain_outputs(ex.run_hand(answer, _fresh(case["inputs"])))
        except StudentError as exc:
            got.update(error=f"StudentError: {exc}", error_type="StudentError")
        raw[case["name"]] = got
    return compare.judge_item(HAND_ITEM, item, raw, 1.0)


def test_hand_solution_is_attention_on_the_example(reference_ns):
    """Is the solution's hand computation the attention of the example (to hand rounding), computed with the
    notebook's own attention, so that the key graded against is right?"""
    q, k, v = (np.array(ex.HAND_EXAMPLE[name]) for name in ("query", "keys", "values"))
    context, weights = reference_ns["attention"](q, k, v)
    exact = {"scores": k @ q, "weights": weights, "context": context}
    answer = reference_ns[HAND_ITEM]
    assert set(answer) == set(ex.HAND_LENGTHS)
    for name, value in exact.items():
        np.testing.assert_allclose(answer[name], value, atol=5e-4, err_msg=name)


def test_hand_mistakes_typed_by_hand_are_named(keys, reference_ns):
    """Does the solution pass every case, and is each known mistake, with its numbers rounded to two decimals as
    a student would type them, named on every case it fails (and only there: a right entry still scores)?"""
    assert all(r.passed for r in _judge_hand(keys, reference_ns[HAND_ITEM]))
    assert all(r.passed for r in _judge_hand(keys, _rounded(reference_ns[HAND_ITEM])))
    for mistake in hidden.HAND_MISTAKES:
        results = _judge_hand(keys, _rounded(mistake.impl))
        failed = [r for r in results if not r.passed]
        assert failed, mistake.name
        assert all(r.mistake and r.mistake["title"] == mistake.title for r in failed), (mistake.name, failed[0].text())
        assert all(not r.public for r in results)  # graded like a quiz: no case of the key is public


@pytest.mark.parametrize("answer,message", [
    ([2.0, 1.0, 1.5], "should be a dict with the keys 'scores', 'weights' and 'context', got list"),
    ({"scores": [2, 1, 1.5], "weights": [0.5, 0.2, 0.3]}, "the dict has no key 'context'"),
    ({"scores": [2, 1], "weights": [0.5, 0.2, 0.3], "context": [0.5, 0.8]}, "should hold 3 numbers"),
    ({"scores": [2, 1, 1.5], "weights": [1.0, 0.368, 0.607], "context": [0.5, 0.8]}, "the weights sum to 1.975"),
    ({"scores": [2, 1, 1.5], "weights": [0.5, 0.2, 0.3], "context": ["0.49", 0.81]}, "plain numbers"),
])
def test_hand_check_explains_the_form(capsys, answer, message):
    """Does the student's check name what is wrong with the form of the answer (not a dict, a missing key, the
    wrong count, weights that do not sum to 1, text instead of numbers)?"""
    from autograder.check import check

    check(answer, item=HAND_ITEM)
    out = capsys.readouterr().out
    assert out.startswith(f"FAIL {HAND_ITEM}") and message in out, out


def test_hand_check_never_reveals_the_values(capsys, reference_ns):
    """Does the check record a well-formed answer, right or wrong (a known mistake's numbers too), without ever
    saying PASS or which numbers are right?"""
    from autograder import reference
    from autograder.check import _check

    for answer in (reference_ns[HAND_ITEM], _rounded(hidden.HAND_MISTAKES[0].impl)):
        report = _check(answer, HAND_ITEM)
        assert report.passed and report.recorded, report.text()
        assert report.text().startswith(f"RECORDED {HAND_ITEM}: answer recorded (graded later)")
    public = reference.load_public(D03)[HAND_ITEM]
    assert [c["name"] for c in public["cases"]] == ["scores", "weights", "context"]
    assert all(c["expected"] is None and not c["mistakes"] for c in public["cases"])  # nothing to look the answer up in


def test_hand_attention_graded_solution_mistake_and_stub(course, graded_demo):
    """Graded for real (the demo class): does the solution earn the item's points, the student who skipped the
    exponential keep the scores but lose the weights and the context (the mistake named, with its hint), and the
    untouched stub score 0, saying the answer is missing?"""
    _, out = graded_demo
    rows = gradebook_rows(out)
    points = course.item(HAND_ITEM)[1].points
    assert float(rows["ada_complete"][HAND_ITEM]) == points
    assert float(rows["mia_d03_hand_no_exp"][HAND_ITEM]) == pytest.approx(points / 3)
    assert float(rows["ben_untouched"][HAND_ITEM]) == 0
    tests = results_of(out, "mia_d03_hand_no_exp")
    assert tests[f"{HAND_ITEM}: scores"]["status"] == "passed"
    title = hidden.HAND_MISTAKES[0].title
    for case in ("weights", "context"):
        test = tests[f"{HAND_ITEM}: {case}"]
        assert test["status"] == "failed" and title in test["output"] and "Hint:" in test["output"], test["output"]
    stub = [t for name, t in results_of(out, "ben_untouched").items() if name.startswith(HAND_ITEM)]
    assert stub and all(t["score"] == 0 for t in stub)
    assert all("no answer yet (still None) in hand_attention[" in t["output"] for t in stub)
