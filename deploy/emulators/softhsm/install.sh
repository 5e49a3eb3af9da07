#!/usr/bin/env bash
# Installs SoftHSM2, the software PKCS#11 token that pkg/keys/pkcs11kms tests run against: Debian
# 12's softhsm2 package, pinned (it brings the module libsofthsm2 and softhsm2-util).
#
# Idempotent: does nothing when the module and softhsm2-util are already there. Needs root (or
# sudo) to install. `make emulators` runs this next to the other installers, some of which use
# apt too, so every apt call waits for the dpkg lock instead of failing on it. `apt-get update`
# runs only when the pinned version is not in the package lists yet.
#
# Use the token by hand (the tests do the same in a temporary directory):
#   mkdir -p /tmp/hsm/tokens
#   echo "directories.tokendir = /tmp/hsm/tokens" >/tmp/hsm/softhsm2.conf
#   export SOFTHSM2_CONF=/tmp/hsm/softhsm2.conf
#   softhsm2-util --init-token --free --label custos --pin 1234 --so-pin 5678
# then point a pkcs11kms.Config at the module path printed below, TokenLabel "custos", PIN "1234".
set -euo pipefail

VERSION="${SOFTHSM2_VERSION:-2.6.1-2.1}"
module=/usr/lib/softhsm/libsofthsm2.so

installed() { [[ -f "$module" ]] && command -v softhsm2-util >/dev/null; }

if installed; then
	echo "softhsm2 already installed: PKCS#11 module at $module"
	exit 0
fi

source "$(dirname "${BASH_SOURCE[0]}")/../apt.sh"
apt_root deploy/emulators/softhsm/install.sh softhsm2
echo "installing softhsm2 $VERSION (Debian package)"
apt_install "softhsm2=$VERSION"

if ! installed; then
	echo "deploy/emulators/softhsm/install.sh: softhsm2 installed but $module or softhsm2-util is missing" >&2
	exit 1
fi
echo "installed softhsm2 $VERSION: PKCS#11 module at $module"
