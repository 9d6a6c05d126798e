# Quick start:  make demo   (main job: Squeeze-Release on the bundled LeNet-300-100)   |   make test
# Each target creates .venv and installs what it needs on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test clean-venv

$(STAMP): pyproject.toml requirements/dev.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements/dev.txt
	touch $(STAMP)

demo: $(STAMP)
	# A second run resumes (and so reprints) the finished run instead of refusing its folder.
	$(BIN)/sr-ir squeeze-release --out out/squeeze-release $$([ -f out/squeeze-release/cycle_000.pt ] && echo --resume)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

clean-venv:
	rm -rf $(VENV)
