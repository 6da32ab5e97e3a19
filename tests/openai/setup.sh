#!/bin/sh
# What tests/e2e/test_openai_client.py needs: node and npm (scripts/deps.sh
# --node) and npm's openai and undici at the versions package-lock.json pins
# (into tests/openai/node_modules, which git ignores).
# Never fails by itself: scripts/npm-ci.sh says what it could not install.
here=$(cd "$(dirname "$0")" && pwd)
exec sh "$here/../../scripts/npm-ci.sh" "$here" "openai setup" --node openai undici
