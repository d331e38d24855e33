# camcli — set-up, demo, tests. `make demo` and `make test` each do all set-up themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help venv install dev demo test docs lint bench bench-memory chromium clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

venv: $(BIN)/python

install: venv  ## create .venv and install camcli
	$(BIN)/python -m pip install --quiet -e .

dev: venv  ## create .venv and install camcli with the dev extras (and Ray, keras-hub and S3, for their tests)
	$(BIN)/python -m pip install --quiet -e '.[dev,ray,hub,s3]'

demo: install  ## heatmaps for sample_images/ into heatmaps/
	$(BIN)/camcli batch sample_images --out heatmaps
	@echo
	@echo "Done: the overlays are in $(CURDIR)/heatmaps/ (one JPEG per photo in sample_images/),"
	@echo "      with what the model predicted in $(CURDIR)/heatmaps/manifest.jsonl"

# Tests run in up to 4 processes (pytest-xdist), a whole module in one: its fixtures are
# built once, and the Ray tests (all in tests/test_ray.py) share one cluster, in one
# process. 'pytest -n 0' runs them all in this process.
test: dev chromium  ## lint, the layers' import contract and the manual (--strict), then the whole test suite
	$(BIN)/ruff check camcli tests bench scripts
	$(BIN)/lint-imports
	site=$$(mktemp -d) && NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir $$site; \
	  status=$$?; rm -rf $$site; exit $$status
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadfile

# The manual: the reference pages and the gallery generated from the code (the gallery runs
# every method on three sample photos, about 2 minutes), then the site, offline.
docs: install  ## the manual into site/ (open site/index.html, or: python -m http.server -d site)
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	$(BIN)/python scripts/docs.py reference
	$(BIN)/python scripts/docs.py gallery
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	@echo "The manual is in $(CURDIR)/site/index.html"

# The HTML report's browser test needs Chromium (Debian package). Installed where this
# user may (root, apt); elsewhere that one test is skipped with its reason.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	    >/dev/null 2>&1 && echo "make: installed chromium for the report's browser test"; } || \
	  echo "make: chromium not installed: the report's browser test will be skipped"

bench: install  ## speed: batch vs. ceiling and naive loop; methods; precisions; engines
	$(BIN)/python -m pip install --quiet -e '.[ray,s3]' 'moto[server]>=5.0' 'boto3>=1.34'
	$(BIN)/python bench/batch.py
	$(BIN)/python bench/methods.py
	$(BIN)/python bench/precision.py
	$(BIN)/python bench/engines.py
	$(BIN)/python bench/boxes.py
	$(BIN)/python bench/layers.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/transformers.py
	$(BIN)/python bench/road.py
	$(BIN)/python bench/storage.py
	$(BIN)/python bench/audit.py
	$(BIN)/python bench/evaluate.py

bench-memory: install  ## peak RSS of batch on 2,000 and 20,000 generated images
	$(BIN)/python bench/batch.py --memory 2000,20000

lint: dev  ## ruff and the layers' import contract (import-linter)
	$(BIN)/ruff check camcli tests bench scripts
	$(BIN)/lint-imports

clean:  ## remove the virtualenv, caches and demo output
	rm -rf $(VENV) heatmaps site .pytest_cache .ruff_cache *.egg-info
