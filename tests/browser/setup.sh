#!/bin/sh
# ctest fixture of the browser tests (label browser): installs what they need
# when it is missing, Debian's chromium (scripts/deps.sh --browser) and npm's
# playwright-core at the version package-lock.json pins (npm ci, into
# tests/browser/node_modules, which git ignores).
#
# It never fails by itself: when something cannot be installed (no root, no
# network) it says so, and the browser test then fails with the reason.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

if [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; then
    "$root/scripts/deps.sh" --browser ||
        echo "browser setup: scripts/deps.sh --browser failed; the browser test fails without chromium"
else
    echo "browser setup: not root and no password-less sudo: not installing chromium"
fi

sh "$root/scripts/npm-ci.sh" "$here" "browser setup" playwright-core
