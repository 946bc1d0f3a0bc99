#!/bin/bash
# tests/bench/celery_baseline.sh [JOBS] — the Celery + Redis baseline that
# bench_ledger prints beside SQLite and PostgreSQL.  Installs the Debian
# packages python3-celery, python3-redis and redis-server when missing (as
# root, or with sudo), starts a throwaway redis-server on a free 127.0.0.1
# port in a temp dir, runs celery_baseline.py with 2 prefork workers, stops
# redis.  Says why on stdout ("celery: skipped: ...") when it cannot.
here=$(cd "$(dirname "$0")" && pwd)
jobs=${1:-2000}
. "$here/../../deploy/deps.sh"
skip() { echo "celery: skipped: $*"; exit 0; }

if ! need_packages python3-celery python3-redis redis-server >/dev/null 2>&1; then
  skip "cannot install the Debian packages python3-celery, python3-redis, redis-server"
fi
# The distribution's python, which the packages install for.
py=/usr/bin/python3
"$py" -c 'import celery, redis' 2>/dev/null || skip "python3-celery is not importable by $py"
command -v redis-server >/dev/null || skip "no redis-server"

dir=$(mktemp -d /tmp/skynet-celery-XXXXXX)
port=
for _ in $(seq 1 50); do
  p=$((20000 + RANDOM % 40000))
  if ! (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || skip "no free port"
redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no \
  --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null ||
  skip "redis-server did not start"
cleanup() {
  [ -f "$dir/redis.pid" ] && kill "$(cat "$dir/redis.pid")" 2>/dev/null
  sleep 0.2
  rm -rf -- "$dir"
}
trap cleanup EXIT
for _ in $(seq 1 50); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
cd "$dir" && timeout 600 "$py" "$here/celery_baseline.py" "$port" "$jobs" ||
  echo "celery: failed (exit $?)"
