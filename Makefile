# Two commands: `make demo` grades the bundled demo class, `make test` runs the tests.
# Both create .venv (Python 3.11) and install the pinned requirements when needed.
# Supported: Python 3.11, from 3.11.2 (Debian 12's python3.11) on, as pyproject.toml's
# requires-python says; any other Python stops here with a message (PYTHON=... names another).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUPPORTED := Python 3.11, from 3.11.2 on (not 3.12 or later)
PYTHON_OK := -c 'import sys; sys.exit(0 if (3, 11, 2) <= sys.version_info[:3] < (3, 12) else 1)'

.PHONY: demo test build bench clean python-check

# The interpreter .venv will run (or runs): stop early, with what to do, when it is not supported.
python-check:
	@if [ -x $(PY) ]; then \
	    $(PY) $(PYTHON_OK) || { echo "error: $(VENV) runs $$($(PY) --version 2>&1); the course needs $(SUPPORTED)." \
	        "Remove $(VENV) and run make again, with PYTHON=/path/to/python3.11 if needed." >&2; exit 2; }; \
	elif ! command -v $(PYTHON) >/dev/null 2>&1; then \
	    echo "error: $(PYTHON) not found; the course needs $(SUPPORTED). Install it (Debian 12:" \
	        "apt-get install python3.11 python3.11-venv) or name one: make PYTHON=/path/to/python3.11" >&2; exit 2; \
	elif ! $(PYTHON) $(PYTHON_OK) 2>/dev/null; then \
	    echo "error: $(PYTHON) is $$($(PYTHON) --version 2>&1); the course needs $(SUPPORTED)." \
	        "Name a supported one: make PYTHON=/path/to/python3.11" >&2; exit 2; \
	fi

$(STAMP): requirements.txt pyproject.toml | python-check
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
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
