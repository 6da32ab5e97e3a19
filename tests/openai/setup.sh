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

version() { # version of package $2 in a package-lock.json, or in a package.json
    node -e 'const j = require(process.argv[1]);
             console.log(j.packages ? j.packages["node_modules/" + process.argv[2]].version : j.version)' \
        "$1" "$2" 2>/dev/null
}
ok=1
for p in openai undici; do
    [ -n "$(version "$here/package-lock.json" $p)" ] &&
        [ "$(version "$here/package-lock.json" $p)" = "$(version "$here/node_modules/$p/package.json" $p)" ] ||
        ok=0
done
if [ $ok -eq 1 ]; then
    echo "openai setup: openai and undici present"
elif (cd "$here" && npm ci --no-audit --no-fund --loglevel=error); then
    echo "openai setup: openai and undici installed by npm ci"
else
    echo "openai setup: npm ci failed; the openai client test fails without them"
fi
exit 0
