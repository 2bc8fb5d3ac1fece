#!/bin/sh
# Builds Mosquitto's password file from environment variables at start-up, so no password
# (not even a hash) lives in the repository: MQTT_USER_<name>=<password>, where <name> is
# the store id with '-' written as '_' (MQTT_USER_store_001=...), plus MQTT_USER_storegate_cloud.
set -eu
passwd=/mosquitto/config/passwd
: > "$passwd"
env | grep '^MQTT_USER_' | while IFS='=' read -r key value; do
  user=$(echo "${key#MQTT_USER_}" | tr '_' '-')
  mosquitto_passwd -b "$passwd" "$user" "$value"
done
chmod 0600 "$passwd"
chown mosquitto "$passwd" 2>/dev/null || true
# The TLS files, mounted read-only from deploy/certs (`storegate certs`), copied where the
# unprivileged mosquitto user can read them; the key stays 0600.
mkdir -p /mosquitto/certs
for file in ca.crt broker.crt broker.key; do
  if [ ! -s "/mosquitto/certs-src/$file" ]; then
    echo "missing deploy/certs/$file: run 'storegate certs' first (docs/security.md)" >&2
    exit 1
  fi
  install -m 0600 -o mosquitto "/mosquitto/certs-src/$file" "/mosquitto/certs/$file" 2>/dev/null \
    || install -m 0600 "/mosquitto/certs-src/$file" "/mosquitto/certs/$file"
done
exec mosquitto -c /mosquitto/config/mosquitto.conf
