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

sudo=""
if [[ "$(id -u)" != 0 ]]; then
	if command -v sudo >/dev/null; then sudo="sudo"; else
		echo "deploy/emulators/chromium/install.sh: chromium is missing and installing it needs root" >&2
		exit 1
	fi
fi

export DEBIAN_FRONTEND=noninteractive
apt=($sudo apt-get -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends)

echo "installing chromium $VERSION (Debian package)"
# chromium-common comes from the same source package and must be the same version.
pkgs=("chromium=$VERSION" "chromium-common=$VERSION")
if ! "${apt[@]}" install "${pkgs[@]}" >/dev/null; then
	"${apt[@]}" update
	"${apt[@]}" install "${pkgs[@]}" >/dev/null
fi

if ! bin="$(found)"; then
	echo "deploy/emulators/chromium/install.sh: chromium installed but no chromium binary is on PATH or at /usr/bin/chromium" >&2
	exit 1
fi
echo "installed chromium $VERSION: $bin"
