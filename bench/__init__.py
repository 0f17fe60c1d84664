"""camex benchmarks: `make bench` (run.py), the registered-clients load
generator (loadgen.py) and their results (results/)."""
