#!/usr/bin/env bash
# Runs the one target conformance suite (pkg/target/targettest) against every storage target and
# prints one line per target: "CONFORMANCE <target> PASS" or "CONFORMANCE <target> FAIL <reason>".
# Cloud targets run against the emulators `make emulators` installed; the rclone target runs once
# per remote it is tested on here: sftp (OpenSSH's sshd on loopback), webdav (a WebDAV server on
# loopback) and rclone-local (rclone's local backend). Exits non-zero on any FAIL.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for t in ${TARGETS:-fs mem s3 gcs azure sftp webdav rclone-local}; do
	case $t in
	sftp) pkg=./pkg/target/rclone/ run='^TestConformanceSFTP$' ;;
	webdav) pkg=./pkg/target/rclone/ run='^TestConformanceWebDAV$' ;;
	rclone-local) pkg=./pkg/target/rclone/ run='^TestConformanceLocal$' ;;
	*) pkg="./pkg/target/$t/" run='^TestConformance$' ;;
	esac
	out=$(go test -count=1 -run "$run" "$pkg" 2>&1)
	if [ $? -eq 0 ] && grep -q '^ok' <<<"$out"; then
		echo "CONFORMANCE $t PASS"
	else
		# The first failure line of the test output says why.
		reason=$(grep -m1 -E -- '--- FAIL|\.go:[0-9]+:|cannot|no such|not installed' <<<"$out" | sed 's/^[[:space:]]*//')
		echo "CONFORMANCE $t FAIL ${reason:-$(tail -n1 <<<"$out")}"
		status=1
	fi
done
exit $status
