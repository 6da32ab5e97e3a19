#!/bin/sh
# Installs the Debian packages sluice needs to build, test and run its demo.
# Only what is missing is installed; nothing happens when all are present.
set -eu
pkgs="build-essential cmake pkg-config openssl ca-certificates curl python3
      libnghttp2-dev libssl-dev libev-dev libnats-dev libinih-dev libjwt-dev
      libjansson-dev libcmocka-dev libsystemd-dev libcurl4-openssl-dev
      nats-server nghttp2-client nginx haproxy prometheus groff-base"
for opt in "$@"; do
    case $opt in
    --fuzz) pkgs="$pkgs clang libclang-rt-14-dev" ;;
    # The Debian package and its test (scripts/package, tests/e2e/test_package.py).
    --package) pkgs="$pkgs dpkg-dev debhelper fakeroot lintian systemd" ;;
    # The browser tests: Debian's Chromium driven by npm's playwright-core
    # (tests/browser/setup.sh runs npm ci). A node that is already there (from
    # Debian or elsewhere) is kept: its own package may bundle npm.
    --browser)
        pkgs="$pkgs chromium fonts-dejavu-core"
        command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs"
        command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm"
        ;;
    # The tests driven by npm clients (the openai client, the Durable Streams
    # conformance suite and client): node and npm; their setup.sh then runs
    # npm ci (scripts/npm-ci.sh).
    --node)
        command -v node >/dev/null 2>&1 || pkgs="$pkgs nodejs"
        command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm"
        ;;
    esac
done
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
