# The two commands: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test lint sweep page-screenshot clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(PY) -m i2i.demo --runs runs --out out/demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(PY) -m ruff check i2i tests benchmarks

sweep: $(VENV)/.installed
	$(PY) benchmarks/lambda_r_sweep.py --out benchmarks/results

# docs/page.png from the export `make demo` writes (needs chromium and chromedriver)
page-screenshot: $(VENV)/.installed
	$(PY) docs/page_screenshot.py --export exports/additive --out docs/page.png

clean:
	rm -rf out runs .pytest_cache
