# Scapy layers, camex-dissect and fuzzing (owner: proto). Included by the top Makefile.
#
#   make fuzz            live fuzz: a million malformed datagrams at a camex server in
#                        the namespace lab while two clients ping; prints datagrams/s
#                        and the server's peak memory (CAMEX_FUZZ_LIVE_N to change)
#   make fuzz-parsers    long property-based fuzzing of the codec, layers and
#                        camex-dissect, v2 and BULK included (CAMEX_FUZZ_EXAMPLES per
#                        property, default 20000)
#   make fuzz-atheris    coverage-guided fuzzing (atheris/libFuzzer) of codec, layers,
#                        capture reader and v2 (BULK, TLVs, the v2 dissector),
#                        FUZZ_SECONDS each (default 120); crashes
#                        are written as crash-* files in the current directory
#   make vectors         regenerate tests/vectors/legacy.json from docs/LEGACY.md and
#                        the captures in tests/vectors/captures (CAMEX_VECTORS to
#                        override)
#   make dissect-captures  camex-dissect every capture of tests/vectors/captures
#
# The regular suites need no target here: tests/unit/test_proto*.py,
# test_dissect*.py, test_fuzz_*.py run in `make test-unit` (bounded number of
# examples) and tests/integration/test_fuzz_live.py (100,000 datagrams) in
# `make test-integration`.

CAMEX_FUZZ_LIVE_N ?= 1000000
CAMEX_FUZZ_EXAMPLES ?= 20000
VECTORS_DIR ?= $(or $(CAMEX_VECTORS),$(CURDIR)/tests/vectors/captures)

FUZZ_SECONDS ?= 120

.PHONY: fuzz fuzz-parsers fuzz-atheris vectors dissect-captures

fuzz: deps venv
	CAMEX_FUZZ_LIVE_N=$(CAMEX_FUZZ_LIVE_N) $(PYTEST) -q -s -p no:cacheprovider \
	  tests/integration/test_fuzz_live.py -k encrypted

fuzz-parsers: venv
	CAMEX_FUZZ_EXAMPLES=$(CAMEX_FUZZ_EXAMPLES) $(PYTEST) -q -n 4 -p no:cacheprovider \
	  tests/unit/test_fuzz_codec.py tests/unit/test_fuzz_layers.py tests/unit/test_fuzz_dissect.py \
	  tests/unit/test_dissect_v2_fuzz.py tests/unit/test_fuzz_v2_bulk.py

fuzz-atheris: venv
	$(PY) -c "import atheris" 2>/dev/null || $(VENV)/bin/pip install -q atheris
	for t in codec layers capture v2; do \
	  $(PY) tests/fuzz/fuzz_parsers.py $$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    > fuzz-$$t.log 2>&1; rc=$$?; \
	  grep -E "^(Done|stat::number_of_executed_units)|crash-|Error" fuzz-$$t.log; \
	  [ $$rc -eq 0 ] || { echo "fuzz-atheris: $$t crashed, see fuzz-$$t.log"; exit 1; }; \
	  rm -f fuzz-$$t.log; \
	done

vectors: venv
	$(PY) tests/vectors/gen_legacy.py $(VECTORS_DIR)

dissect-captures: venv
	for f in $(VECTORS_DIR)/*.pcap; do \
	  $(VENV)/bin/camex-dissect "$$f" --psk demo-global-secret --psk per-client-secret-c2 \
	    --no-summary -q || exit 1; \
	  $(VENV)/bin/camex-dissect "$$f" --psk demo-global-secret --psk per-client-secret-c2 | tail -4; \
	done
