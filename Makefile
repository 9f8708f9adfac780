# musicrec: `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test install bench clean

install: $(STAMP)

# The pretrained genre front end reads the checkpoints of this wheel (never its code).
MUSICNN := musicnn==0.1.0

# One pip call installs the whole pinned stack, so nothing later lifts numpy
# or protobuf past what TensorFlow 2.17 accepts. musicnn follows alone with
# --no-deps: its metadata pins numpy<1.17 and TensorFlow 1, neither of which
# it may pull in; only its checkpoint files are used (see NOTICE).
$(STAMP): setup.py Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24" "setuptools>=70,<81" wheel
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps "$(MUSICNN)"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/musicrec demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider tests $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_audio_ingest.py --data ../shared/data/gtzan_dev

clean:
	rm -rf demo-run build *.egg-info
