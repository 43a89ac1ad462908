#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Makes a throwaway test CA and one server certificate signed by it, for the test backend.
#   certs.sh DIR
# Writes DIR/ca.pem, DIR/ca.key, DIR/server.pem (leaf then CA), DIR/server.key.
# The server certificate names localhost, 127.0.0.1, ::1 and the test host names below, so
# clients verify it for real while every name is pointed at loopback by the client itself
# (curl --resolve, CURLOPT_RESOLVE, SNI/Host on a connection to 127.0.0.1): the host's
# resolver configuration is never touched. Keys are P-256: fast to make, short-lived.
set -euo pipefail
dir=${1:?usage: certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
umask 077

names=(localhost api.test mail.test echo.test other.test deputy.test)
san="IP:127.0.0.1,IP:::1"
for n in "${names[@]}"; do san="DNS:$n,$san"; done

openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=deputy test CA" \
	-addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign" \
	-out ca.pem 2>/dev/null

openssl ecparam -name prime256v1 -genkey -noout -out server.key 2>/dev/null
openssl req -new -key server.key -subj "/CN=localhost" -out server.csr 2>/dev/null
cat >server.ext <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san
EXT
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 2 \
	-extfile server.ext -out server.leaf.pem 2>/dev/null
cat server.leaf.pem ca.pem >server.pem
rm -f server.csr server.ext server.leaf.pem ca.srl
chmod 0644 ca.pem server.pem
