#!/usr/bin/env bash
# Installs the S3 server (VersityGW) used by pkg/target/s3 tests.
#
# VersityGW is an S3 gateway that serves a local directory (the "posix" backend) and, unlike most
# S3 emulators, enforces Object Lock: retention, legal holds and versioning. The tests rely on
# that, so the conformance suite runs with locks enforced.
#
# Builds the pinned github.com/versity/versitygw/cmd/versitygw with `go install` into
# .cache/tools/bin/versitygw, outside the workspace (GOWORK=off), so the gateway's dependencies
# never enter the workspace modules. Idempotent: does nothing when the version stamp matches the
# pin. Needs only the Go toolchain and the module proxy; the build takes about a minute.
#
# Run the gateway by hand (versioning and object lock need a versioning directory):
#   mkdir -p /tmp/s3/data /tmp/s3/versions
#   .cache/tools/bin/versitygw --access test --secret testsecret --port 127.0.0.1:7070 \
#       posix --versioning-dir /tmp/s3/versions /tmp/s3/data
# then point an s3.Config at Endpoint "http://127.0.0.1:7070" with UsePathStyle and those keys.
set -euo pipefail

VERSION="${VERSITYGW_VERSION:-v1.8.0}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
bin_dir="$root/.cache/tools/bin"
bin="$bin_dir/versitygw"
stamp="$bin_dir/.versitygw.version"

if [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$VERSION" ]]; then
	echo "versitygw $VERSION already installed at $bin"
	exit 0
fi

mkdir -p "$bin_dir"
# Drop the old stamp first, so an interrupted build is never taken for a finished one.
rm -f "$stamp"
# Outside any module: `go install pkg@version` resolves the gateway's own go.mod.
cd "$bin_dir"
GOWORK=off GOFLAGS= GOBIN="$bin_dir" go install -trimpath "github.com/versity/versitygw/cmd/versitygw@$VERSION"
echo "$VERSION" >"$stamp"
echo "installed versitygw $VERSION at $bin"
