#!/usr/bin/env python3
"""Cold-start init time of Lambda function binaries, against a local Lambda
Runtime API (the HTTP interface a `provided.al2023` runtime polls).

Lambda's init phase ends when the runtime first asks for an invocation
(`GET /2018-06-01/runtime/invocation/next`); this measures, for each binary,
the time from spawning it to that request, over several runs, then hands it
one event and checks it answers (so a binary that starts fast by failing
does not count). Usage:

    lambda_init.py --runs 15 --event events/openapi.unknown-route.json \
        [--env NAME:VAR=VALUE ...] NAME=PATH[=EVENT] ...

`--env` sets a variable for one binary only (the Aurora worker's settings).

Prints one JSON object per binary (size, median and p90 init time, the
answer to the event), then a table against the binary named `hello`, with
the targets: init <= 1.5x hello's, size <= 10 MB. Exits 1 when one is missed.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Runtime:
    """State shared with the HTTP handler for one run."""

    def __init__(self, event):
        self.event = event
        self.first_next = None
        self.answer = None
        self.done = threading.Event()
        self.served = False


def make_handler(rt):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path.endswith("/runtime/invocation/next"):
                if rt.first_next is None:
                    rt.first_next = time.monotonic()
                if rt.served:
                    # One invocation per run: hold the runtime until it is killed.
                    rt.done.wait(30)
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                rt.served = True
                body = rt.event.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Lambda-Runtime-Aws-Request-Id", "bench-request-1")
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
                self.send_header(
                    "Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench"
                )
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            payload = self.rfile.read(length) if length else b""
            kind = "response" if self.path.endswith("/response") else "error"
            rt.answer = (kind, payload.decode(errors="replace"))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()
            rt.done.set()

    return Handler


def run_once(binary, env, event):
    """One cold start, on a Runtime API server of its own: a request still in
    flight from the previous (killed) process cannot reach this run."""
    rt = Runtime(event)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(rt))
    # A killed runtime resets its long-poll connection: expected, not an error.
    server.handle_error = lambda request, client_address: None
    threading.Thread(target=server.serve_forever, args=(0.005,), daemon=True).start()
    env = dict(env, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}")
    start = time.monotonic()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        rt.done.wait(30)
    finally:
        proc.kill()
        _, err = proc.communicate()
        rt.done.set()  # releases a held long poll
        server.shutdown()
        server.server_close()
    if rt.first_next is None:
        raise SystemExit(f"{binary} never asked for an invocation:\n{err.decode(errors='replace')[-2000:]}")
    return (rt.first_next - start) * 1000.0, rt.answer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--event", required=True, help="default event JSON handed to each binary once per run")
    ap.add_argument("--env", action="append", default=[], help="NAME:VAR=VALUE, for binary NAME only")
    ap.add_argument("binaries", nargs="+", help="NAME=PATH[=EVENT]")
    args = ap.parse_args()

    env = dict(os.environ)
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": "bench",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/bench",
            "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            # Nothing listens here: a function that calls AWS during init fails loudly.
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            # ... once, not three times with back-off, so a run ends quickly.
            "AWS_MAX_ATTEMPTS": "1",
            "RUST_LOG": "warn",
        }
    )
    own_env = {}
    for item in args.env:
        name, _, assignment = item.partition(":")
        var, eq, value = assignment.partition("=")
        if not (name and var and eq):
            raise SystemExit(f"--env {item!r}: expected NAME:VAR=VALUE")
        own_env.setdefault(name, {})[var] = value
    specs = []
    for spec in args.binaries:
        name, path, *rest = spec.split("=", 2)
        specs.append((name, path, open(rest[0] if rest else args.event).read(), dict(env, **own_env.pop(name, {}))))
    if own_env:
        raise SystemExit(f"--env names no binary: {sorted(own_env)}")
    times = {name: [] for name, *_ in specs}
    answers = {name: [] for name, *_ in specs}
    # Round-robin over the binaries, so a slow spell of this shared machine
    # weighs on every binary alike; the first round warms the page cache and
    # is not counted.
    for i in range(args.runs + 1):
        for name, path, event, own in specs:
            ms, answer = run_once(path, own, event)
            if i > 0:
                times[name].append(ms)
                answers[name].append(answer)
    rows = []
    for name, path, *_ in specs:
        t = sorted(times[name])
        answered = [a for a in answers[name] if a]
        answer = answered[-1] if answered else None
        status = None
        if answer and answer[0] == "response":
            try:
                status = json.loads(answer[1]).get("statusCode")
            except (ValueError, AttributeError):
                status = None
        row = {
            "name": name,
            "size_bytes": os.path.getsize(path),
            "init_ms_median": round(statistics.median(t), 2),
            "init_ms_p90": round(t[int(0.9 * (len(t) - 1))], 2),
            "answer": answer[0] if answer else None,
            "status_code": status,
            "unanswered_runs": len(answers[name]) - len(answered),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return summary(rows)


def summary(rows):
    hello = next((r for r in rows if r["name"] == "hello"), rows[0])
    print()
    print(f"{'binary':<18}{'size MB':>9}{'init ms (median)':>18}{'p90':>8}{'x hello':>9}  answer")
    ok = True
    for r in rows:
        ratio = r["init_ms_median"] / hello["init_ms_median"]
        mb = r["size_bytes"] / 1e6
        flag = ""
        if r is not hello and (ratio > 1.5 or mb > 10):
            flag, ok = "  OVER TARGET", False
        answer = (r["answer"] or "none") + (f" {r['status_code']}" if r["status_code"] else "")
        if r["unanswered_runs"]:
            answer += f" ({r['unanswered_runs']} runs unanswered)"
        print(f"{r['name']:<18}{mb:>9.2f}{r['init_ms_median']:>18.2f}{r['init_ms_p90']:>8.2f}{ratio:>9.2f}  {answer}{flag}")
    print("targets (init <= 1.5x hello, size <= 10 MB):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
