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

version() { # version of playwright-core in a package-lock.json or a package.json
    node -e 'const j = require(process.argv[1]);
             console.log(j.packages ? j.packages["node_modules/playwright-core"].version : j.version)' "$1" 2>/dev/null
}
want=$(version "$here/package-lock.json")
have=$(version "$here/node_modules/playwright-core/package.json")
if [ -n "$want" ] && [ "$want" = "$have" ]; then
    echo "browser setup: playwright-core $have present"
elif (cd "$here" && npm ci --no-audit --no-fund --loglevel=error); then
    echo "browser setup: playwright-core $want installed by npm ci"
else
    echo "browser setup: npm ci failed; the browser test fails without playwright-core"
fi
exit 0
