#!/bin/sh
# Makes a development CA and a server certificate for localhost, 127.0.0.1
# and ::1, signed by that CA, so that `curl --cacert certs/dev/ca.pem` and
# browsers that trust the CA work without -k. Never use these in production.
#
#   certs/make-dev-cert.sh [DIR]      (default: certs/dev next to this script)
#
# Existing files are kept, so the CA a browser was told to trust stays valid.
set -eu
dir=${1:-$(dirname "$0")/dev}
mkdir -p "$dir"
cd "$dir"
if [ -s server.pem ] && [ -s server.key ] && [ -s ca.pem ]; then
    exit 0
fi
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=sluice development CA" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout server.key -out server.csr 2>/dev/null
cat > server.ext <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
EXT
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
    -extfile server.ext -out server.pem 2>/dev/null
rm -f server.csr server.ext ca.srl
chmod 644 ca.pem server.pem
echo "development certificate in $dir (trust $dir/ca.pem)"
