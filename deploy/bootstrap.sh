#!/bin/sh
# One-shot set-up of the compose stack (the segwatch-init service), safe to run
# on every `docker compose up`:
#   1. applies the migrations;
#   2. creates the read key Prometheus scrapes /metrics with, and the key
#      Alertmanager posts notifications with, each written where that service
#      reads it, unless a key is already there;
#   3. creates an admin key and prints it, once: the first run only (the key
#      list says whether it exists). Read it with
#      `docker compose -f deploy/docker-compose.yml logs segwatch-init`.
# SECRETS (default /secrets) holds prometheus/ and alertmanager/.
set -eu
secrets=${SECRETS:-/secrets}

segwatch migrate

token() { # FILE ROLE LABEL
    if [ ! -s "$1" ]; then
        segwatch keys create --role "$2" --label "$3" > "$1.new"
        chmod 0644 "$1.new"
        mv "$1.new" "$1"
        echo "segwatch-init: wrote a $2 key to $1"
    fi
}
token "$secrets/prometheus/segwatch-metrics.token" read prometheus
token "$secrets/alertmanager/segwatch-webhook.token" admin alertmanager-webhook

if ! segwatch keys list | cut -f5 | grep -qx first-admin; then
    admin=$(segwatch keys create --role admin --label first-admin)
    echo "segwatch-init: the first admin key (shown once, stored hashed): $admin"
fi
