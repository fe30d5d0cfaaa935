# The README's quick start: `make quickstart` trains and tests the default POS tagger,
# `make test` runs the test suite. Both create .venv on first use (Python 3 and pip only).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.seqtag-installed
RUN := runs/ud_ewt_upos

.PHONY: quickstart test install

install: $(STAMP)

# torch==2.13.0 first: a plain `torch` requirement would pull a multi-GB CUDA build here.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# A second `make quickstart` tests the first run's model again: seqtag fit refuses to overwrite
# an earlier run's checkpoints (delete runs/ud_ewt_upos to train afresh).
quickstart: $(STAMP)
	test -f $(RUN)/checkpoints/best.ckpt || $(VENV)/bin/seqtag fit --config configs/ud_ewt_upos.yaml
	$(VENV)/bin/seqtag test --config configs/ud_ewt_upos.yaml --ckpt_path $(RUN)/checkpoints/best.ckpt

test: $(STAMP)
	$(PY) -m pytest -ra
