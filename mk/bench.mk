# Benchmarks (owner: bench). `make bench` measures raw veth, camex and the
# peer tunnels side by side and writes bench/results/latest.{md,json,png}.
# Other areas add suites with BENCH_SUITES += their-target (e.g. bench-vm).
#   make bench BENCH_ARGS="--quick --only camex-relay-enc,wireguard-go"
#   make bench-list              names of the entries
#   make bench-load LOADGEN_ARGS="--clients 10000"
#   make bench-profile           py-spy of the camex relay under iperf3 load
#   make bench-cserver           build/cserver/cxserver, the C model of the deployed legacy server
#   make bench-cserver-compare CSERVER_ARGS="--clients 10"   its CPU per relayed datagram beside camex's
#   make bench-fleet             N = 10, 100, 1,000 camera-like clients through one server
#   make bench-fleet FLEET_ARGS="--clients 100 --servers camex,naive-relay"
#   make bench-peers             the newest wireguard-go of Debian sid/trixie, unpacked
#                                into ~/.cache/camex-bench (cached; BENCH_PEERS_ARGS=--refresh)

APT_BENCH := iperf3 iputils-ping openssl procps wireguard-go wireguard-tools openvpn fastd tinc \
	gcc make libssl-dev libsodium-dev debian-archive-keyring
BENCH_ARGS ?=
LOADGEN_ARGS ?=
PROFILE_ARGS ?=
CSERVER_ARGS ?=
FLEET_ARGS ?=
BENCH_PEERS_ARGS ?=
# The fleet rows of `make bench`: a smaller set than `make bench-fleet`
# (about 4 minutes); `make bench BENCH_FLEET=` leaves them out.
BENCH_FLEET ?= --fleet 10,100

.PHONY: bench bench-net bench-deps bench-peers bench-list bench-load bench-profile bench-fleet \
	bench-cserver bench-cserver-compare

bench: bench-net $(BENCH_SUITES)

bench-deps:
	sh scripts/install-deps.sh $(APT_BENCH)

# Never fails: a peer it cannot fetch is a bench row saying why.
bench-peers: venv bench-deps
	$(PY) -m bench.fetch $(BENCH_PEERS_ARGS)

bench-net: venv deps bench-deps bench-peers
	$(PY) -m bench.run $(BENCH_ARGS) $(BENCH_FLEET)

bench-list: venv
	$(PY) -m bench.run --list

bench-load: venv deps
	$(PY) -m bench.load $(LOADGEN_ARGS)

bench-profile: venv deps
	$(PY) -m bench.profile $(PROFILE_ARGS)

# The C model of the deployed legacy server (bench/cserver/cxserver.c).
bench-cserver: bench-deps
	$(MAKE) -C bench/cserver

bench-cserver-compare: venv deps bench-cserver
	$(PY) -m bench.cserver.compare $(CSERVER_ARGS)

bench-fleet: venv deps bench-cserver
	$(PY) -m bench.fleet $(FLEET_ARGS)

# The harness and report checks (run by `make test`).
TEST_SUITES += bench-selftest
.PHONY: bench-selftest
bench-selftest: venv deps bench-deps
	$(PYTEST) -q -p no:cacheprovider bench/tests
