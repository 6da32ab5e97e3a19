#!/bin/sh
# Installs what tests/e2e/test_openai_client.py needs when it is missing: node
# and npm (scripts/deps.sh --openai) and npm's openai and undici at the versions
# package-lock.json pins (npm ci, into tests/openai/node_modules, which git
# ignores).
#
# It never fails by itself: when something cannot be installed (no root, no
# network) it says so, and the test then fails with the reason.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

if [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; then
    "$root/scripts/deps.sh" --openai || echo "openai setup: scripts/deps.sh --openai failed"
else
    echo "openai setup: not root and no password-less sudo: not installing node"
fi

sh "$root/scripts/npm-ci.sh" "$here" "openai setup" openai undici
