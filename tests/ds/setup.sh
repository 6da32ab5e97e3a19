#!/bin/sh
# Installs what tests/e2e/test_ds_conformance.py and test_ds_client.py need when
# it is missing: node and npm (scripts/deps.sh --ds) and npm's Durable Streams
# conformance suite, client and undici at the versions package-lock.json pins
# (npm ci, into tests/ds/node_modules, which git ignores).
#
# It never fails by itself: when something cannot be installed (no root, no
# network) it says so, and the test then fails with the reason.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

if [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; then
    "$root/scripts/deps.sh" --ds || echo "ds setup: scripts/deps.sh --ds failed"
else
    echo "ds setup: not root and no password-less sudo: not installing node"
fi

sh "$root/scripts/npm-ci.sh" "$here" "ds setup" @durable-streams/server-conformance-tests \
    @durable-streams/client undici
