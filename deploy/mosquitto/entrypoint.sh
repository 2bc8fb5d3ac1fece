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
exec mosquitto -c /mosquitto/config/mosquitto.conf
