#!/bin/sh
# The in-guest half of the VM lab: lab/vm/run.py boots a kernel with
# virtme-ng and runs this script as root inside it.  It runs one suite of
# guest tests with the guest's pytest (the host's venv, shared read-only)
# and leaves everything the host needs in OUTDIR (a writable shared dir).
#
#   guest.sh OUTDIR KO SUITE [pytest args...]
set -u
out=$1 ko=$2 suite=$3
shift 3
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo" || exit 2
uname -r >"$out/uname"
cut -d' ' -f1 /proc/uptime >"$out/uptime"     # guest seconds to reach here
g=tests/lab/guest
case "$suite" in
contract) files="$g/vmcase_contract.py $g/vmcase_roundtrip.py $g/vmcase_zz_dmesg.py" ;;
e2e)      files="$g/vmcase_e2e.py $g/vmcase_zz_dmesg.py" ;;
all)      files="$g/vmcase_contract.py $g/vmcase_roundtrip.py $g/vmcase_e2e.py $g/vmcase_zz_dmesg.py" ;;
bench)    files="" ;;
*)        echo "unknown suite $suite" >"$out/error"; exit 2 ;;
esac
export CAMEX_KO="$ko" CAMEX_OUT="$out" PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$repo"
if [ "$suite" = bench ]; then
    .venv/bin/python -m lab.vm.bench_guest "$out" "$@" >"$out/bench.log" 2>&1
else
    # --confcutdir: the guest cases need none of the host-side conftests.
    .venv/bin/python -m pytest -p no:cacheprovider -o addopts= -q \
        --confcutdir="$g" --junitxml="$out/junit.xml" $files "$@" \
        >"$out/pytest.log" 2>&1
fi
echo $? >"$out/rc"
dmesg >"$out/dmesg.log"
