#!/bin/sh
# Install the Debian packages that `make demo` and `make test` need on a
# fresh machine. Runs as root; installs only what is missing so that a
# second run costs nothing.
set -eu
need=""
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need="$need $pkg"
done
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: need root to install:$need" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# One update per run at most; apt-cache lookups need it on a fresh machine.
apt-get update -qq
apt-get install -y -qq --no-install-recommends $need
