#!/usr/bin/env bash
# A PostgreSQL server for the connector tests, from Debian's `postgresql` package (installed if
# missing), on 127.0.0.1 only, with a test database. Idempotent: `start` on a running server
# just ensures the role and database again.
#   scripts/postgres.sh start DIR [PORT]   prints "HOST PORT DBNAME USER" once it accepts connections
#   scripts/postgres.sh stop DIR           stops the server whose data lives in DIR/data
# The role `taskrig` gets the password in $TASKRIG_PG_PASSWORD (read by psql from the environment,
# never on a command line); password authentication is required over TCP.
set -euo pipefail
cmd=${1:?usage: postgres.sh start|stop DIR [PORT]}
dir=${2:?usage: postgres.sh start|stop DIR [PORT]}
port=${3:-55432}
bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
# PostgreSQL refuses to run as root: as root, run its programs as the package's `postgres` user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case $cmd in
start)
  if [ -z "$(bindir)" ]; then
    [ "$(id -u)" = 0 ] || { echo "PostgreSQL is not installed: apt-get install postgresql (as root)" >&2; exit 1; }
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2
  fi
  B=$(bindir)
  mkdir -p "$dir"
  chmod 755 "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  cd "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_pg "$B/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >"$dir/initdb.log"
  fi
  if ! as_pg "$B/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    as_pg "$B/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off" start >&2
  fi
  TASKRIG_PG_PASSWORD=${TASKRIG_PG_PASSWORD:?set TASKRIG_PG_PASSWORD} as_pg "$B/psql" -h "$dir" -p "$port" -U postgres \
    -d postgres -v ON_ERROR_STOP=1 -q <<'SQL'
\getenv pw TASKRIG_PG_PASSWORD
select 'create role taskrig login' where not exists (select from pg_roles where rolname = 'taskrig') \gexec
alter role taskrig password :'pw';
select 'create database taskrig_test owner taskrig' where not exists (select from pg_database where datname = 'taskrig_test') \gexec
SQL
  echo "127.0.0.1 $port taskrig_test taskrig"
  ;;
stop)
  B=$(bindir)
  cd "$dir" 2>/dev/null || exit 0
  if [ -n "$B" ] && [ -f "$dir/data/PG_VERSION" ] && as_pg "$B/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    as_pg "$B/pg_ctl" -D "$dir/data" stop -m fast -w -t 60 >&2
  fi
  ;;
*)
  echo "usage: postgres.sh start|stop DIR [PORT]" >&2
  exit 2
  ;;
esac
