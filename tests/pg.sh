# tests/pg.sh — a throwaway PostgreSQL server for the tests (sourced).
#
#   . tests/pg.sh; pg_test_start     # exports SKYNET_TEST_PG_URL (and
#                                    # SKYNET_TEST_PG_CTL), or fails
#   pg_test_stop                     # also run by pg_test_start's EXIT trap
#
# The server lives in a temp dir, listens on 127.0.0.1 at a free high port
# and on a unix socket in that dir, trusts local connections, and runs as an
# unprivileged user when we are root (postgres refuses root): the distro's
# "postgres" user when present, else a "skynet-test" user made for it.
# Without PostgreSQL the tests that need it skip, except under CI=true, where
# pg_test_start fails so that nothing is silently untested.

PG_TEST_DIR=
PG_TEST_BIN=
PG_TEST_USER=

pg_test_as() {
  if [ -n "$PG_TEST_USER" ]; then
    runuser -u "$PG_TEST_USER" -- "$@"
  else
    "$@"
  fi
}

pg_test_free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 40000))
    if ! (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

pg_test_stop() {
  if [ -n "$PG_TEST_DIR" ] && [ -d "$PG_TEST_DIR" ]; then
    pg_test_as "$PG_TEST_BIN/pg_ctl" -D "$PG_TEST_DIR/data" -m immediate stop \
      >/dev/null 2>&1 || true
    rm -rf -- "$PG_TEST_DIR"
  fi
  PG_TEST_DIR=
}

pg_test_fail() {
  echo "postgresql for tests: $*" >&2
  pg_test_stop
  if [ "${CI:-}" = true ]; then
    return 1
  fi
  echo "postgresql for tests: not available; PostgreSQL tests will skip" >&2
  return 0
}

pg_test_pick_user() {
  [ "$(id -u)" = 0 ] || return 0
  if id postgres >/dev/null 2>&1; then
    PG_TEST_USER=postgres
  else
    id skynet-test >/dev/null 2>&1 ||
      useradd --system --no-create-home --shell /usr/sbin/nologin skynet-test ||
      return 1
    PG_TEST_USER=skynet-test
  fi
}

pg_test_start() {
  local bin port db=skynet_test
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1) || true
  [ -n "$bin" ] && [ -x "$bin/initdb" ] || { pg_test_fail "no initdb under /usr/lib/postgresql"; return; }
  PG_TEST_BIN=$bin
  pg_test_pick_user || { pg_test_fail "cannot create an unprivileged user"; return; }
  PG_TEST_DIR=$(mktemp -d /tmp/skynet-pg-XXXXXX)
  chmod 755 "$PG_TEST_DIR"
  [ -z "$PG_TEST_USER" ] || chown "$PG_TEST_USER" "$PG_TEST_DIR"
  # Keep whatever EXIT trap the caller already set, and run ours first.
  local prev
  prev=$(trap -p EXIT | sed -E "s/^trap -- '(.*)' EXIT$/\1/")
  trap "pg_test_stop; $prev" EXIT
  port=$(pg_test_free_port) || { pg_test_fail "no free port"; return; }
  pg_test_as "$bin/initdb" -D "$PG_TEST_DIR/data" -U skynet --auth=trust \
    -E UTF8 --no-sync >"$PG_TEST_DIR/initdb.log" 2>&1 ||
    { cat "$PG_TEST_DIR/initdb.log" >&2; pg_test_fail "initdb failed"; return; }
  # Settings in the data dir, so that a test can stop and start the server
  # again with $SKYNET_TEST_PG_CTL (a PostgreSQL restart during a run).
  printf "listen_addresses = '127.0.0.1'\nport = %s\nunix_socket_directories = '%s'\nmax_connections = 200\n" \
    "$port" "$PG_TEST_DIR" >>"$PG_TEST_DIR/data/postgresql.conf"
  pg_test_as "$bin/pg_ctl" -D "$PG_TEST_DIR/data" -l "$PG_TEST_DIR/server.log" -w \
    start >/dev/null 2>&1 ||
    { cat "$PG_TEST_DIR/server.log" >&2 2>/dev/null; pg_test_fail "server did not start"; return; }
  pg_test_as "$bin/createdb" -h 127.0.0.1 -p "$port" -U skynet "$db" ||
    { pg_test_fail "createdb failed"; return; }
  export SKYNET_TEST_PG_URL="postgresql://skynet@127.0.0.1:$port/$db"
  # "$SKYNET_TEST_PG_CTL stop -m fast" / "$SKYNET_TEST_PG_CTL start"
  export SKYNET_TEST_PG_CTL="${PG_TEST_USER:+runuser -u $PG_TEST_USER -- }$bin/pg_ctl -D $PG_TEST_DIR/data -l $PG_TEST_DIR/server.log -w"
  echo "== postgresql for tests at $SKYNET_TEST_PG_URL"
}
