# Two commands: `make demo` grades the bundled demo class, `make test` runs the tests.
# Both create .venv (Python 3.11) and install the pinned requirements when needed.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test build bench clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --prefix $(VENV) --name attention-course --display-name "Attention course (.venv)" >/dev/null
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) demo/students.py demo/submitted
	$(PY) -m autograder grade demo/submitted --out demo/out
	@echo; $(PY) -m autograder summary demo/out

test: $(STAMP)
	$(PY) -m pytest -q

build: $(STAMP)
	$(PY) -m autograder build

bench: $(STAMP)
	$(PY) bench/benchmark.py

clean:
	rm -rf demo/out demo/submitted .cache
