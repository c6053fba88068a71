#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine, run as root by `make`.
#   bootstrap.sh VENV PACKAGE...
set -euo pipefail
venv="$1"; shift
if [ "$(id -u)" -ne 0 ]; then
  echo "bastion: run make as root (bastion creates cgroups and network namespaces)" >&2
  exit 2
fi
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating virtualenv $venv"
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
echo "bootstrap: installing bastion with its dev extras"
"$venv/bin/python" -m pip install -q -e ".[dev]"
