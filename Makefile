# Everything a fresh machine needs. `make quickstart` and `make test` install first.
PYTHON ?= python3
# CPU machines: this pin takes the local CPU wheel; a looser spec can pull a multi-GB CUDA build.
# On a GPU machine use e.g. `make install TORCH_SPEC=torch` (or keep the torch it already has).
TORCH_SPEC ?= torch==2.13.0

.PHONY: install quickstart sft dpo test test-fast bench clean

install:
	$(PYTHON) -m pip install -q "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -q -e ".[test,lora,plot,bench]"

quickstart: install sft dpo

sft:
	$(PYTHON) -m lit_align fit --config configs/sft.yaml

dpo:
	$(PYTHON) -m lit_align fit --config configs/dpo.yaml

# Two pytest-xdist workers: many tests are single-threaded Python (imports, small models), so the
# second core would otherwise idle through them; conftest gives each worker one torch thread.
test: install
	$(PYTHON) -m pytest -q -n 2 --dist worksteal

test-fast:
	$(PYTHON) -m pytest -q -n 2 --dist worksteal -m "not slow"

# runs/ and the SFT export data/embedded/sft are relative to this folder; generated data is cached in
# $LIT_ALIGN_CACHE (default ~/.cache/lit_align), which `clean` leaves alone.
clean:
	rm -rf runs data/embedded
