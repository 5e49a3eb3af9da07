#!/usr/bin/env bash
# Installs headless Chromium, which the pkg/report test uses to render the compliance report's
# HTML (chromium --headless --dump-dom) and check the page a browser shows: Debian 12's chromium
# package, pinned to the version the Debian archive serves (bookworm-security; see
# `apt-cache policy chromium`). Override with CHROMIUM_VERSION when the archive moves on.
#
# Idempotent: does nothing when chromium is already installed. Needs root (or sudo) to install.
# `make emulators` runs this next to the other installers, some of which use apt too, so every
# apt call waits for the dpkg lock instead of failing on it. `apt-get update` runs only when the
# pinned version is not in the package lists yet. Prints the binary's path.
set -euo pipefail

VERSION="${CHROMIUM_VERSION:-156.0.8078.129-1~deb12u1}"

found() {
	if [[ -x /usr/bin/chromium ]]; then echo /usr/bin/chromium; return 0; fi
	command -v chromium 2>/dev/null
}

if bin="$(found)"; then
	echo "chromium already installed: $bin"
	exit 0
fi

source "$(dirname "${BASH_SOURCE[0]}")/../apt.sh"
apt_root deploy/emulators/chromium/install.sh chromium
echo "installing chromium $VERSION (Debian package)"
# chromium-common comes from the same source package and must be the same version.
apt_install "chromium=$VERSION" "chromium-common=$VERSION"

if ! bin="$(found)"; then
	echo "deploy/emulators/chromium/install.sh: chromium installed but no chromium binary is on PATH or at /usr/bin/chromium" >&2
	exit 1
fi
echo "installed chromium $VERSION: $bin"
