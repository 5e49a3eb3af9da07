#!/usr/bin/env bash
# Layer rules: pkg never imports a service; a service never imports another service; storage
# targets never import the catalog or the worker; production code never imports test helpers.
set -euo pipefail
mod=github.com/custos-dev/custos
fail=0
check() { # $1 package pattern, $2 forbidden import regexp, $3 rule
  local bad
  bad=$(go list -deps -f '{{.ImportPath}}' "$1" 2>/dev/null | grep -E "$2" || true)
  if [ -n "$bad" ]; then echo "layer rule broken: $3: $1 imports $(echo $bad | tr '\n' ' ')"; fail=1; fi
}
for p in $(go list ./pkg/... | grep -vE '/internal/(natstest|pgtest|emulator|logtest)$'); do
  check "$p" "^$mod/services/" "pkg never imports services"
done
for p in $(go list ./pkg/target/...); do
  check "$p" "^$mod/pkg/(catalog|worker|restore|keys)" "targets never import catalog, keys or worker"
done
# The repository (the on-target format) sits below every pipeline that uses it.
check ./pkg/repository "^$mod/pkg/(worker|restore|retention|config|schedule|scrub)$" "the repository never imports the pipelines that use it"
for s in worker cli scheduler; do
  check ./services/$s/... "^$mod/services/($(echo worker cli scheduler | tr ' ' '\n' | grep -v "^$s$" | paste -sd'|'))" "a service never imports another"
done
for p in ./services/worker ./services/cli ./services/scheduler $(go list ./pkg/... | grep -vE '/internal/(natstest|pgtest|emulator|logtest)$|/(targettest|keystest|sourcetest|scheduletest)$'); do
  check "$p" "^$mod/pkg/(internal/(natstest|pgtest|emulator|logtest)|target/targettest|keys/keystest|source/sourcetest|schedule/scheduletest)$" "production code never imports test helpers"
done
# The rclone target is its own module: only the worker and the CLI link it.
for p in ./services/scheduler $(go list ./pkg/...); do
  check "$p" "^github.com/rclone/|^$mod/pkg/target/rclone" "only the worker and the CLI link the rclone target"
done
# go directives must agree across modules.
dirs=$(grep -h '^go ' go.work proto/go.mod pkg/go.mod services/*/go.mod tests/go.mod | sort -u | wc -l)
if [ "$dirs" != 1 ]; then echo "go directives differ between go.work and the modules"; fail=1; fi
exit $fail
