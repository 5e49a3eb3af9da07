#!/usr/bin/env bash
# Runs the one target conformance suite (pkg/target/targettest) against every storage target and
# prints one line per target: "CONFORMANCE <target> PASS" or "CONFORMANCE <target> FAIL <reason>".
# Cloud targets run against the emulators `make emulators` installed; exits non-zero on any FAIL.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
for t in ${TARGETS:-fs mem s3 gcs azure}; do
	out=$(go test -count=1 -run '^TestConformance$' "./pkg/target/$t/" 2>&1)
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
