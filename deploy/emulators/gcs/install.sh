#!/usr/bin/env bash
# Installs the GCS emulator (fake-gcs-server) used by pkg/target/gcs tests.
#
# Builds a pinned github.com/fsouza/fake-gcs-server into .cache/tools/bin/fake-gcs-server from a
# throwaway tool module under .cache/tools/src/fake-gcs-server, so the emulator's dependencies
# never enter the workspace modules. Idempotent: does nothing when the binary exists and the
# stamp next to it (.cache/tools/bin/.fake-gcs-server.version) names the pinned version.
# Concurrent runs wait for each other. Needs only the Go toolchain and the module proxy.
#
# Run the emulator by hand:
#   .cache/tools/bin/fake-gcs-server -scheme http -host 127.0.0.1 -port 4443 -backend memory
#   .cache/tools/bin/fake-gcs-server -scheme http -host 127.0.0.1 -port 4443 \
#       -backend filesystem -filesystem-root /tmp/gcs-data
# then point a gcs.Config at Endpoint "http://127.0.0.1:4443/storage/v1/".
set -euo pipefail

VERSION="${FAKE_GCS_VERSION:-v1.56.1}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
bin_dir="$root/.cache/tools/bin"
src_dir="$root/.cache/tools/src/fake-gcs-server"
bin="$bin_dir/fake-gcs-server"
stamp="$bin_dir/.fake-gcs-server.version"

installed() { [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$VERSION" ]]; }

if installed; then
	echo "fake-gcs-server $VERSION already installed at $bin"
	exit 0
fi

mkdir -p "$bin_dir" "$src_dir"
if command -v flock >/dev/null; then
	exec 9>"$bin_dir/.fake-gcs-server.lock"
	flock 9
	if installed; then # another run finished it while we waited
		echo "fake-gcs-server $VERSION already installed at $bin"
		exit 0
	fi
fi

cd "$src_dir"
# A fresh module each time the pin changes: nothing of an older build lingers.
rm -f go.mod go.sum
export GOWORK=off GOFLAGS=-mod=mod
if ! out="$(go mod init custos.local/tools/fake-gcs-server 2>&1)"; then
	echo "$out" >&2
	exit 1
fi
go get "github.com/fsouza/fake-gcs-server@$VERSION"
go build -trimpath -o "$bin.tmp" github.com/fsouza/fake-gcs-server
# The stamp names what the binary was built from; check the binary agrees before trusting it.
if ! go version -m "$bin.tmp" | grep -Eq "^\s+(mod|dep)\s+github.com/fsouza/fake-gcs-server\s+$VERSION(\s|$)"; then
	echo "built binary does not report fake-gcs-server $VERSION:" >&2
	go version -m "$bin.tmp" >&2
	exit 1
fi
mv -f "$bin.tmp" "$bin"
echo "$VERSION" >"$stamp"
echo "installed fake-gcs-server $VERSION at $bin"
