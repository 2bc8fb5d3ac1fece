#!/bin/sh
# Runs before every other service of docker-compose.yml: refuses to bring the stack up while
# a secret in .env is still a change-me placeholder from deploy/env.example or is shorter
# than 32 characters (128 bits as hex: `openssl rand -hex 24` gives 48). Compose passes each
# secret as SECRET_<name>; the message names the variable, never its value.
set -eu
problems=$(env | grep '^SECRET_' | sort | while IFS='=' read -r key value; do
  name=${key#SECRET_}
  case "$(printf '%s' "$value" | tr 'A-Z_' 'a-z-')" in
    *change-me* | *changeme*)
      echo "  $name: still the change-me placeholder of deploy/env.example" ;;
    *)
      if [ "${#value}" -lt 32 ]; then
        echo "  $name: shorter than 32 characters (under 128 bits as hex)"
      fi ;;
  esac
done)
if [ -n "$problems" ]; then
  echo "refusing to start: replace these secrets in .env (openssl rand -hex 24):" >&2
  echo "$problems" >&2
  exit 1
fi
echo "preflight: every secret is set and none is a placeholder"
