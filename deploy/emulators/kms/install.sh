#!/usr/bin/env bash
# Installs the AWS KMS emulator (local-kms) used by pkg/keys/awskms tests.
#
# Builds a pinned github.com/nsmithuk/local-kms into .cache/tools/bin/local-kms from a throwaway
# tool module under .cache/tools/src/local-kms, so the emulator's dependencies never enter the
# workspace modules. Idempotent: does nothing when the binary exists and the stamp next to it
# (.cache/tools/bin/.local-kms.version) names the pinned version. Concurrent runs wait for each
# other. Needs only the Go toolchain and the module proxy.
#
# Run the emulator by hand (it keeps its keys under KMS_DATA_PATH):
#   PORT=4599 KMS_REGION=eu-west-1 KMS_ACCOUNT_ID=111122223333 KMS_DATA_PATH=/tmp/kms-data \
#       .cache/tools/bin/local-kms
# then point an awskms.Config at Endpoint "http://127.0.0.1:4599", Region "eu-west-1" and any
# static access key (the emulator does not check signatures).
set -euo pipefail

VERSION="${LOCAL_KMS_VERSION:-v0.0.0-20260228092603-2a5e92d09ab6}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
bin_dir="$root/.cache/tools/bin"
src_dir="$root/.cache/tools/src/local-kms"
bin="$bin_dir/local-kms"
stamp="$bin_dir/.local-kms.version"

installed() { [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$VERSION" ]]; }

if installed; then
	echo "local-kms $VERSION already installed at $bin"
	exit 0
fi

mkdir -p "$bin_dir" "$src_dir"
if command -v flock >/dev/null; then
	exec 9>"$bin_dir/.local-kms.lock"
	flock 9
	if installed; then # another run finished it while we waited
		echo "local-kms $VERSION already installed at $bin"
		exit 0
	fi
fi

cd "$src_dir"
# A fresh module each time the pin changes: nothing of an older build lingers.
rm -f go.mod go.sum
export GOWORK=off GOFLAGS=-mod=mod
if ! out="$(go mod init custos.local/tools/local-kms 2>&1)"; then
	echo "$out" >&2
	exit 1
fi
go get "github.com/nsmithuk/local-kms@$VERSION"
go build -trimpath -o "$bin.tmp" github.com/nsmithuk/local-kms
# The stamp names what the binary was built from; check the binary agrees before trusting it.
if ! go version -m "$bin.tmp" | grep -Eq "^\s+(mod|dep)\s+github.com/nsmithuk/local-kms\s+$VERSION(\s|$)"; then
	echo "built binary does not report local-kms $VERSION:" >&2
	go version -m "$bin.tmp" >&2
	exit 1
fi
mv -f "$bin.tmp" "$bin"
echo "$VERSION" >"$stamp"
echo "installed local-kms $VERSION at $bin"
