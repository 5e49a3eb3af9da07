#!/usr/bin/env bash
# Runs govulncheck on every module of the workspace against an offline copy of the Go
# vulnerability database, and fails if any of them calls vulnerable code.
#
# Why offline: the machines this project runs on (developers' and CI's) reach the Go module proxy
# but not the public vulnerability database server govulncheck queries by default, so
# deploy/vulncheck/install.sh (run first, idempotent) builds the database from the
# golang.org/x/vulndb module the proxy serves, pinned there, into .cache/vulndb/<version>/, and
# this script points govulncheck at it with -db file://... . Findings are as current as that pin.
#
# The modules are scanned in workspace mode (go.work), which is how `make build` and `make test`
# resolve dependency versions; the standard library is checked against the Go toolchain that
# `go` runs (`go env GOVERSION`). By default one govulncheck run takes the packages of every
# module at once (MODULE/... each): the modules share most of their dependency graph, and one
# analysis of it costs about a fifth of one per module. VULNCHECK_PER_MODULE=1 runs
# `govulncheck ./...` in each module's folder instead, to see which module calls what.
#
# Exit status: 0 when no code calls a known vulnerability (vulnerabilities in imported packages or
# required modules whose vulnerable code is never called are listed as informational and do not
# fail); 1 if some code does (govulncheck exits 3 for that) or govulncheck could not run (a
# package that does not compile, say). In per-module mode every module is scanned even after one
# fails.
#
# Usage: bash deploy/vulncheck/run.sh [govulncheck flags...], e.g. `-show verbose` or `-test`.
# VULNCHECK_MODULES overrides the list of modules (space-separated folders).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
read -r -a modules <<<"${VULNCHECK_MODULES:-proto pkg pkg/target/rclone services/worker services/cli services/scheduler tests}"

db="$(bash "$here/install.sh" | tail -n 1)"
govulncheck="$root/.cache/tools/bin/govulncheck"
# Workspace mode even when the caller has GOWORK=off: the versions scanned are those the
# workspace builds and tests with.
export GOWORK="$root/go.work"

# scan DIR PATTERN...: govulncheck from DIR (it needs a go.mod there); sets rc.
scan() {
	local dir="$1"
	shift
	rc=0
	(cd "$dir" && "$govulncheck" -db "file://$db" "${args[@]}" "$@") || rc=$?
}

args=("$@")
failed=()
echo "govulncheck $(go env GOVERSION), database $db" >&2
if [[ "${VULNCHECK_PER_MODULE:-}" == 1 ]]; then
	for m in "${modules[@]}"; do
		echo "== govulncheck $m" >&2
		scan "$root/$m" ./...
		case $rc in
		0) ;;
		3) failed+=("$m: calls vulnerable code") ;;
		*) failed+=("$m: govulncheck failed (exit $rc)") ;;
		esac
	done
else
	patterns=()
	for m in "${modules[@]}"; do
		patterns+=("$root/$m/...")
	done
	echo "== govulncheck ${modules[*]}" >&2
	scan "$root/${modules[0]}" "${patterns[@]}"
	case $rc in
	0) ;;
	3) failed+=("${modules[*]}: code calls vulnerable code (VULNCHECK_PER_MODULE=1 tells which module)") ;;
	*) failed+=("govulncheck failed (exit $rc)") ;;
	esac
fi

if ((${#failed[@]} > 0)); then
	echo "vulncheck FAILED:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "vulncheck: no called vulnerabilities in ${modules[*]}"
