#!/bin/sh
# ctest fixture of the browser tests (label browser): Debian's chromium
# (scripts/deps.sh --browser) and npm's playwright-core at the version
# package-lock.json pins (into tests/browser/node_modules, which git ignores).
# Never fails by itself: scripts/npm-ci.sh says what it could not install.
here=$(cd "$(dirname "$0")" && pwd)
exec sh "$here/../../scripts/npm-ci.sh" "$here" "browser setup" --browser playwright-core
