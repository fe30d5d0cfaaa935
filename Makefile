# The README's quick start: `make quickstart` trains and tests the default POS tagger,
# `make test` runs the test suite. Both create .venv on first use (Python 3 and pip only).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.seqtag-installed
RUN := runs/ud_ewt_upos

.PHONY: quickstart test install

install: $(STAMP)

# torch==2.13.0 first, and pinned again beside the extras: a plain `torch` requirement (litdata
# has one) would pull a multi-GB CUDA build here. litdata also pulls torchvision, whose wheel is
# built for CUDA torch and fails to import beside the CPU one (and with it torchmetrics, which
# imports it when present); litdata needs it only for images, so an unusable one is removed.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]" torch==2.13.0
	$(PY) -c "import torchvision" 2>/dev/null || $(PY) -m pip uninstall --quiet -y torchvision
	touch $(STAMP)

# A second `make quickstart` resumes the first run from its last.ckpt (finishing it if it was
# interrupted, doing nothing if it had finished) instead of training afresh: seqtag fit refuses
# to overwrite an earlier run's checkpoints. Delete runs/ud_ewt_upos to start over.
quickstart: $(STAMP)
	if [ -f $(RUN)/checkpoints/last.ckpt ]; then \
	  $(VENV)/bin/seqtag fit --config configs/ud_ewt_upos.yaml --ckpt_path $(RUN)/checkpoints/last.ckpt; \
	else \
	  $(VENV)/bin/seqtag fit --config configs/ud_ewt_upos.yaml; \
	fi
	$(VENV)/bin/seqtag test --config configs/ud_ewt_upos.yaml --ckpt_path $(RUN)/checkpoints/best.ckpt

# Style first (ruff check, ruff format --check), then the whole suite, slow tests included.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -ra --durations=20
