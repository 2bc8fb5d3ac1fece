#!/bin/sh
# The dynamic-security file (logins, hashed passwords, roles) is written into the data
# volume by the `mosquitto-logins` service (storegate broker-logins) before this starts; the
# broker must own it, since it saves the shopper logins the cloud adds at run time there.
# The paths can be overridden (tests/test_deploy_mosquitto.py runs this script as shipped).
set -eu
logins=${MOSQUITTO_DYNSEC_FILE:-/mosquitto/data/dynamic-security.json}
config=${MOSQUITTO_CONFIG:-/mosquitto/config/mosquitto.conf}
certs_src=${MOSQUITTO_CERTS_SRC:-/mosquitto/certs-src}
certs=${MOSQUITTO_CERTS:-/mosquitto/certs}
if [ ! -s "$logins" ]; then
  echo "no $logins: run the mosquitto-logins service (storegate broker-logins) first" >&2
  exit 1
fi
# The volume may have been created by mosquitto-logins (as root): the broker saves its
# persistence and the plugin its file (via a temporary file) in that directory.
chown mosquitto "$(dirname "$logins")" "$logins" 2>/dev/null || true
chmod 0600 "$logins"
# The TLS files, mounted read-only from deploy/certs (`storegate certs`), copied where the
# unprivileged mosquitto user can read them; the key stays 0600.
mkdir -p "$certs"
for file in ca.crt broker.crt broker.key; do
  if [ ! -s "$certs_src/$file" ]; then
    echo "missing deploy/certs/$file: run 'storegate certs' first (docs/security.md)" >&2
    exit 1
  fi
  install -m 0600 -o mosquitto "$certs_src/$file" "$certs/$file" 2>/dev/null \
    || install -m 0600 "$certs_src/$file" "$certs/$file"
done
exec mosquitto -c "$config"
