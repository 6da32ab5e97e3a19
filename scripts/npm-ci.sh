#!/bin/sh
# npm-ci.sh DIR NAME DEPS-OPTION PACKAGE...: first installs the Debian
# packages `scripts/deps.sh DEPS-OPTION` names when missing (when root or
# password-less sudo allows), then makes DIR/node_modules hold each PACKAGE
# at the version DIR/package-lock.json pins, running npm ci in DIR when one
# is missing or another version; NAME starts each line it prints. The test
# fixtures (tests/{browser,openai,ds}/setup.sh) are this one call.
#
# It never fails: when something cannot be installed (no root, no network)
# it says so, and the test that needs it then fails with the reason.
set -u
dir=$1 name=$2 deps=$3
shift 3
root=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; then
    "$root/scripts/deps.sh" "$deps" || echo "$name: scripts/deps.sh $deps failed"
else
    echo "$name: not root and no password-less sudo: not running scripts/deps.sh $deps"
fi
version() { # version of package $2 in a package-lock.json ($1), or a package.json's own
    node -e 'const j = require(process.argv[1]);
             console.log(j.packages ? j.packages["node_modules/" + process.argv[2]].version : j.version)' \
        "$1" "$2" 2>/dev/null
}
ok=1 list=""
for p in "$@"; do
    want=$(version "$dir/package-lock.json" "$p")
    list="$list $p $want"
    { [ -n "$want" ] && [ "$want" = "$(version "$dir/node_modules/$p/package.json" "$p")" ]; } || ok=0
done
if [ $ok -eq 1 ]; then
    echo "$name:$list present"
elif (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error); then
    echo "$name:$list installed by npm ci"
else
    echo "$name: npm ci failed; the test fails without$list"
fi
exit 0
