#!/usr/bin/env bash
# Installs the PostgreSQL 15 server binaries the tests start (devstack.StartPostgres, through
# pkg/internal/pgtest or directly) when they are absent: Debian 12's postgresql-15 package.
# Idempotent; a no-op when initdb and postgres are already in $CUSTOS_PG_BIN or
# /usr/lib/postgresql/15/bin. Needs root (or sudo) to install.
#
# Only the binaries are wanted: create_main_cluster=false stops the package from creating (and so
# starting) its own cluster. The package name pins the major version; Debian's point release is
# whatever the Debian 12 archive serves (15.x security updates).
set -euo pipefail

bindir="${CUSTOS_PG_BIN:-/usr/lib/postgresql/15/bin}"
if [ -x "$bindir/initdb" ] && [ -x "$bindir/postgres" ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then sudo="sudo"; else
    echo "deploy/postgres/install.sh: PostgreSQL 15 is missing and installing it needs root" >&2
    exit 1
  fi
fi

echo "installing PostgreSQL 15 server binaries (Debian package postgresql-15)"
# Do not create or start the default cluster: tests run their own servers.
$sudo mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.d/custos.conf >/dev/null
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null

if ! [ -x /usr/lib/postgresql/15/bin/initdb ]; then
  echo "deploy/postgres/install.sh: postgresql-15 installed but /usr/lib/postgresql/15/bin/initdb is missing" >&2
  exit 1
fi
