#!/bin/sh
# What tests/e2e/test_ds_conformance.py and test_ds_client.py need: node and
# npm (scripts/deps.sh --node) and npm's Durable Streams conformance suite,
# client and undici at the versions package-lock.json pins (into
# tests/ds/node_modules, which git ignores).
# Never fails by itself: scripts/npm-ci.sh says what it could not install.
here=$(cd "$(dirname "$0")" && pwd)
exec sh "$here/../../scripts/npm-ci.sh" "$here" "ds setup" --node @durable-streams/server-conformance-tests @durable-streams/client undici
