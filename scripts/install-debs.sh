#!/usr/bin/env bash
# Installs the Debian packages cloudmeta needs, only those missing (quick when all are there).
set -euo pipefail
missing=()
for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Another apt (a second checkout's make, unattended-upgrades) may hold dpkg's lock: wait for it.
lock=(-o DPkg::Lock::Timeout=900)
apt-get "${lock[@]}" update -qq || true
apt-get "${lock[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
