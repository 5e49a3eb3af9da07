#!/usr/bin/env bash
# Installs Azurite, the Azure Storage emulator, pinned by package.json and package-lock.json
# beside this script, into <repo>/.cache/tools/azurite (or $CUSTOS_TOOLS_DIR/azurite) with
# `npm ci` from the npm registry. The Azure target tests start
# node_modules/azurite/dist/src/blob/main.js from there.
#
# Idempotent: when the lock file of the last successful install equals the committed one and
# the entry point is present, it does nothing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
tools=${CUSTOS_TOOLS_DIR:-$repo/.cache/tools}
dest=$tools/azurite
entry=$dest/node_modules/azurite/dist/src/blob/main.js
stamp=$dest/.installed-lock.json # copy of the lock, written only after npm ci succeeded

if [ -f "$entry" ] && cmp -s "$here/package-lock.json" "$stamp"; then
  echo "azurite: up to date in $dest"
  exit 0
fi

command -v node >/dev/null || { echo "azurite: node is not installed" >&2; exit 1; }
command -v npm >/dev/null || { echo "azurite: npm is not installed" >&2; exit 1; }

mkdir -p "$dest"
rm -f "$stamp"
cp "$here/package.json" "$here/package-lock.json" "$dest/"
(cd "$dest" && npm ci --no-audit --no-fund)
[ -f "$entry" ] || { echo "azurite: $entry missing after npm ci" >&2; exit 1; }
cp "$here/package-lock.json" "$stamp"
echo "azurite: installed $(node -p "require('$dest/node_modules/azurite/package.json').version") in $dest"
