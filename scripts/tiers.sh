#!/bin/sh
# `make test`: run each tier (a make target) in order, time it, and end
# with a table of tiers, times and results.
#
#   tiers.sh MAKE FIRST [TIER...]
#
# FIRST (make check) gates the rest: when it fails nothing slower runs, as
# a tree that fails the fast tier is not worth an hour of labs. The later
# tiers all run even when one fails, so one run shows every failure. Exits
# 1 when any tier failed.
set -u
make=$1
shift
table=$(mktemp)
trap 'rm -f "$table"' EXIT
trap 'exit 130' INT TERM   # ^C stops make test, not just the running tier
failed=0
t_all=$(date +%s)

mmss() { printf '%d:%02d' $(($1 / 60)) $(($1 % 60)); }

ntiers=$#
first=1
for tier in "$@"; do
    t0=$(date +%s)
    $make --no-print-directory "$tier"
    rc=$?
    dt=$(($(date +%s) - t0))
    if [ "$rc" -eq 0 ]; then result=ok; else result="FAILED (exit $rc)"; failed=$((failed + 1)); fi
    printf '%-20s %8s  %s\n' "$tier" "$(mmss "$dt")" "$result" >>"$table"
    if [ "$first" -eq 1 ] && [ "$rc" -ne 0 ]; then
        shift
        for skipped in "$@"; do
            printf '%-20s %8s  %s\n' "$skipped" - "not run: $tier failed" >>"$table"
        done
        break
    fi
    first=0
done

echo
echo "make test: time per tier"
printf '%-20s %8s  %s\n' tier time result
cat "$table"
printf '%-20s %8s  %s\n' total "$(mmss $(($(date +%s) - t_all)))" \
    "$([ "$failed" -eq 0 ] && echo 'every tier passed' || echo "$failed of $ntiers tiers failed")"
[ "$failed" -eq 0 ]
