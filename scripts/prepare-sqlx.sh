#!/usr/bin/env bash
# Regenerates .sqlx, the offline query data that lets the crate build without a
# database, from a scratch database with the migrations applied. Run after
# changing a query or a migration; commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
admin=${SEGWATCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
db=segwatch_sqlx_prepare_$$
url=${admin%/*}/$db
psql "$admin" -q -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
for migration in migrations/postgres/*.sql; do
    psql "$url" -q -v ON_ERROR_STOP=1 -f "$migration"
done
rm -rf .sqlx
mkdir .sqlx
touch src/lib.rs
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$PWD/.sqlx" DATABASE_URL="$url" cargo check --all-targets --quiet
psql "$admin" -q -c "DROP DATABASE $db"
echo "wrote $(ls .sqlx | wc -l) query files to .sqlx"
