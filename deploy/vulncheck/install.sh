#!/usr/bin/env bash
# Installs what deploy/vulncheck/run.sh needs: a pinned govulncheck and an offline copy of the Go
# vulnerability database.
#
# Why offline: the machines this project runs on (developers' and CI's) reach the Go module proxy
# but not the public vulnerability database server that govulncheck queries by default. The
# proxy does serve golang.org/x/vulndb, the repository that database is generated from, and its
# data/osv folder holds every report as an OSV JSON file. So:
#
#  1. govulncheck: built from golang.org/x/vuln (cmd/govulncheck) at GOVULNCHECK_VERSION into
#     .cache/tools/bin/govulncheck, from a throwaway tool module under
#     .cache/tools/src/govulncheck so its dependencies never enter the workspace modules. The
#     stamp .cache/tools/bin/.govulncheck.version names the version and the Go toolchain it was
#     built with; a different toolchain rebuilds it.
#  2. the database: golang.org/x/vulndb at VULNDB_VERSION is downloaded through the proxy and
#     deploy/vulncheck/mkdb turns its data/osv into the layout `govulncheck -db file://...`
#     reads (index/db.json, index/modules.json, index/vulns.json, ID/<GO-ID>.json), in
#     .cache/vulndb/VULNDB_VERSION/. Its stamp .builder holds a hash of mkdb's source, so a change
#     to mkdb rebuilds the database.
#
# The database is as current as VULNDB_VERSION: to take newer reports, move the pin to a newer
# golang.org/x/vulndb pseudo-version (the module has no tags; outside a module,
# `GOWORK=off go list -m golang.org/x/vulndb@latest` names the newest the proxy serves).
#
# Idempotent: does nothing when both are in place. Concurrent runs wait for each other. Needs
# only the Go toolchain and the module proxy. Prints the database folder on its last line.
set -euo pipefail

GOVULNCHECK_VERSION="${GOVULNCHECK_VERSION:-v1.9.0}"
VULNDB_VERSION="${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin_dir="$root/.cache/tools/bin"
src_dir="$root/.cache/tools/src/govulncheck"
bin="$bin_dir/govulncheck"
stamp="$bin_dir/.govulncheck.version"
db_root="$root/.cache/vulndb"
db="$db_root/$VULNDB_VERSION"

export GOWORK=off

go_version="$(go env GOVERSION)"
want_stamp="$GOVULNCHECK_VERSION $go_version"
# mkdb's source decides the database's content: hash it (sorted, so the order is stable).
builder="$(cd "$here" && find go.mod go.sum mkdb -name 'go.*' -o -name '*.go' ! -name '*_test.go' | LC_ALL=C sort |
	xargs sha256sum | sha256sum | cut -d' ' -f1)"

tool_installed() { [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]]; }
db_installed() { [[ -f "$db/index/modules.json" && -f "$db/.builder" && "$(cat "$db/.builder")" == "$builder" ]]; }

lock() { # $1: lock file; holds it until the script ends
	if command -v flock >/dev/null; then
		exec 9>"$1"
		flock 9
	fi
}

install_tool() {
	mkdir -p "$bin_dir" "$src_dir"
	lock "$bin_dir/.govulncheck.lock"
	if tool_installed; then # another run finished it while we waited
		echo "govulncheck $GOVULNCHECK_VERSION ($go_version) installed at $bin by another run" >&2
		return
	fi
	(
		cd "$src_dir"
		# A fresh module each time the pin changes: nothing of an older build lingers.
		rm -f go.mod go.sum
		export GOFLAGS=-mod=mod
		if ! out="$(go mod init custos.local/tools/govulncheck 2>&1)"; then
			echo "$out" >&2
			exit 1
		fi
		go get "golang.org/x/vuln@$GOVULNCHECK_VERSION"
		go build -trimpath -o "$bin.tmp" golang.org/x/vuln/cmd/govulncheck
	)
	# The stamp names what the binary was built from; check the binary agrees before trusting it.
	if ! go version -m "$bin.tmp" | grep -Eq "^\s+(mod|dep)\s+golang.org/x/vuln\s+$GOVULNCHECK_VERSION(\s|$)"; then
		echo "built binary does not report golang.org/x/vuln $GOVULNCHECK_VERSION:" >&2
		go version -m "$bin.tmp" >&2
		exit 1
	fi
	mv -f "$bin.tmp" "$bin"
	echo "$want_stamp" >"$stamp"
	echo "installed govulncheck $GOVULNCHECK_VERSION ($go_version) at $bin" >&2
}

install_db() {
	mkdir -p "$db_root"
	lock "$db_root/.lock"
	if db_installed; then # another run finished it while we waited
		echo "vulnerability database $VULNDB_VERSION built at $db by another run" >&2
		return
	fi
	# go mod download -json prints the module's folder (Dir) and its .info file (Time: the
	# commit's date, which stands in for the entries' zero "modified").
	local meta src info tmp
	meta="$(cd "$db_root" && go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION")"
	src="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$meta")"
	info="$(sed -n 's/^[[:space:]]*"Info": "\(.*\)",\{0,1\}$/\1/p' <<<"$meta")"
	if [[ -z "$src" || ! -d "$src/data/osv" || -z "$info" || ! -f "$info" ]]; then
		echo "golang.org/x/vulndb@$VULNDB_VERSION has no data/osv folder or .info file:" >&2
		echo "$meta" >&2
		exit 1
	fi
	tmp="$db_root/.$VULNDB_VERSION.tmp.$$"
	rm -rf "$tmp"
	# shellcheck disable=SC2064 # expanded now on purpose: tmp is local to this function
	trap "rm -rf '$tmp'" EXIT
	(cd "$here" && go run ./mkdb -osv "$src/data/osv" -info "$info" -out "$tmp") >&2
	echo "$builder" >"$tmp/.builder"
	rm -rf "$db"
	mv "$tmp" "$db"
	trap - EXIT
	echo "built vulnerability database golang.org/x/vulndb@$VULNDB_VERSION at $db" >&2
}

if tool_installed; then
	echo "govulncheck $GOVULNCHECK_VERSION ($go_version) already installed at $bin" >&2
else
	(install_tool)
fi
if db_installed; then
	echo "vulnerability database $VULNDB_VERSION already built at $db" >&2
else
	(install_db)
fi
echo "$db"
