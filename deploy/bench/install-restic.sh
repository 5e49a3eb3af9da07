#!/usr/bin/env bash
# Installs restic, the peer `make bench` compares Custos with (tests/cmd/bench, peer section).
#
# Builds github.com/restic/restic/cmd/restic at RESTIC_VERSION from the Go module proxy (the
# machines this project runs on reach no other download site) into .cache/tools/bin/restic, from
# a throwaway tool module under .cache/tools/src/restic so restic's dependencies never enter the
# workspace modules (GOWORK=off, GOFLAGS=-mod=mod). The stamp .cache/tools/bin/.restic.version
# names the version and the Go toolchain it was built with; another toolchain rebuilds it. The
# first build takes a minute or two; later runs take none.
#
# Idempotent; concurrent runs wait for each other (flock). Prints the binary's path on its last
# line. The bench runs this itself when -restic is not given and reports a failure as
# "# peer: restic not installed: ...".
set -euo pipefail

RESTIC_VERSION="${RESTIC_VERSION:-v0.18.1}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin_dir="$root/.cache/tools/bin"
src_dir="$root/.cache/tools/src/restic"
bin="$bin_dir/restic"
stamp="$bin_dir/.restic.version"

export GOWORK=off
go_version="$(go env GOVERSION)"
want_stamp="$RESTIC_VERSION $go_version"

installed() { [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]]; }

if installed; then
	echo "restic $RESTIC_VERSION ($go_version) already installed at $bin" >&2
	echo "$bin"
	exit 0
fi
mkdir -p "$bin_dir" "$src_dir"
if command -v flock >/dev/null; then
	exec 9>"$bin_dir/.restic.lock"
	flock 9
fi
if installed; then # another run finished it while we waited
	echo "restic $RESTIC_VERSION ($go_version) installed at $bin by another run" >&2
	echo "$bin"
	exit 0
fi
echo "building restic $RESTIC_VERSION from the Go module proxy (first time: a minute or two)" >&2
(
	cd "$src_dir"
	# A fresh module each time the pin changes: nothing of an older build lingers.
	rm -f go.mod go.sum
	export GOFLAGS=-mod=mod
	go mod init custos.local/tools/restic >/dev/null 2>&1
	go get "github.com/restic/restic@$RESTIC_VERSION" >&2
	# restic's own build sets main.version the same way (build.go), so `restic version` says it.
	go build -trimpath -ldflags "-s -w -X main.version=${RESTIC_VERSION#v}" -o "$bin.tmp" github.com/restic/restic/cmd/restic
)
# The stamp names what the binary was built from; check the binary agrees before trusting it.
if ! go version -m "$bin.tmp" | grep -Eq "^\s+(mod|dep)\s+github.com/restic/restic\s+$RESTIC_VERSION(\s|$)"; then
	echo "built binary does not report github.com/restic/restic $RESTIC_VERSION:" >&2
	go version -m "$bin.tmp" >&2
	exit 1
fi
mv -f "$bin.tmp" "$bin"
echo "$want_stamp" >"$stamp"
echo "installed restic $RESTIC_VERSION ($go_version) at $bin" >&2
echo "$bin"
