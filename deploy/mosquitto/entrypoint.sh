#!/bin/sh
# The dynamic-security file (logins, hashed passwords, roles) is written into the data
# volume by the `mosquitto-logins` service (storegate broker-logins) before this starts; the
# broker must own it, since it saves the shopper logins the cloud adds at run time there.
# The paths can be overridden (tests/test_deploy_mosquitto.py runs this script as shipped).
set -eu
logins=${MOSQUITTO_DYNSEC_FILE:-/mosquitto/data/dynamic-security.json}
config=${MOSQUITTO_CONFIG:-/mosquitto/config/mosquitto.conf}
if [ ! -s "$logins" ]; then
  echo "no $logins: run the mosquitto-logins service (storegate broker-logins) first" >&2
  exit 1
fi
# The volume may have been created by mosquitto-logins (as root): the broker saves its
# persistence and the plugin its file (via a temporary file) in that directory.
chown mosquitto "$(dirname "$logins")" "$logins" 2>/dev/null || true
chmod 0600 "$logins"
exec mosquitto -c "$config"
