"""Celery baseline for bench_ledger: the same no-op work through Celery with a
Redis broker and result backend, 2 prefork worker processes.

    celery_baseline.py REDIS_PORT JOBS

Prints lines bench_ledger parses ("celery ..." / "celery-figures k=v ...").
Run by tests/bench/celery_baseline.sh, which starts redis-server.
"""
import os
import subprocess
import sys
import time

from celery import Celery

# The worker imports this module under celery's own argv: the port comes by
# environment there.
PORT = os.environ.get("CELERY_BENCH_PORT") or (sys.argv[1] if len(sys.argv) > 1 else "6379")
URL = "redis://127.0.0.1:%s/0" % PORT
app = Celery("celery_baseline", broker=URL, backend=URL)
app.conf.update(task_serializer="json", result_serializer="json",
                accept_content=["json"], worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True)


@app.task(name="skynet_bench.noop")
def noop(submitted):
    """Does nothing; hands back when it started, for enqueue-to-start."""
    return [submitted, time.time()]


def pct(v, p):
    v = sorted(v)
    return v[int((len(v) - 1) * p)] * 1000.0 if v else float("nan")


def burst(n):
    """jobs/s end to end: n submits as fast as possible, until every result is in."""
    t0 = time.time()
    res = [noop.apply_async((time.time(),)) for _ in range(n)]
    starts = []
    for r in res:
        sub, start = r.get(timeout=120)
        starts.append(start - sub)
    el = time.time() - t0
    return n / el, starts


def idle(n, gap):
    """One task at a time to idle workers: submit -> start and submit -> result."""
    starts, rtt = [], []
    for _ in range(n):
        t = time.time()
        sub, start = noop.apply_async((t,)).get(timeout=30)
        rtt.append(time.time() - t)
        starts.append(start - sub)
        time.sleep(gap)
    return starts, rtt


def main():
    jobs = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=here, CELERY_BENCH_PORT=PORT)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_baseline", "worker",
         "--pool=prefork", "--concurrency=2", "--loglevel=warning",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        env=env, stdout=subprocess.DEVNULL, stderr=open("celery-worker.log", "w"))
    try:
        noop.apply_async((time.time(),)).get(timeout=60)   # the worker is up
        noop.apply_async((time.time(),)).get(timeout=60)
        rate, bstarts = burst(jobs)
        print("celery     burst 2 prc: %7.0f jobs/s  enqueue->start p50 %7.2f ms"
              "  p99 %7.2f ms  (%d jobs, end to end)" % (rate, pct(bstarts, .5), pct(bstarts, .99), jobs))
        n = min(200, max(20, jobs // 10))
        starts, rtt = idle(n, 0.005)
        print("celery     idle  2 prc: enqueue->start p50 %7.2f ms  p99 %7.2f ms;"
              "  submit->result p50 %7.2f ms  p99 %7.2f ms  (%d jobs)"
              % (pct(starts, .5), pct(starts, .99), pct(rtt, .5), pct(rtt, .99), n))
        print("celery-figures rate=%.1f start_p99=%.3f rtt_p50=%.3f rtt_p99=%.3f"
              % (rate, pct(starts, .99), pct(rtt, .5), pct(rtt, .99)))
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


if __name__ == "__main__":
    main()
