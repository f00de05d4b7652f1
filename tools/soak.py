#!/usr/bin/env python3
"""Soak test of a running `edgellm serve`: many requests from concurrent socket clients with random
sampling parameters, streamed or not, some disconnecting at random points, plus an optional serial
client chatting all the while. Prints one JSON object with the figures: requests, failures, RSS and
open file descriptors of the server early and at the end, and the drift between them.

Usage (tools/soak.sh starts the server and the serial pty for you):
    soak.py --socket PATH --pid PID [--serial DEV] [--requests 2000] [--clients 4]
            [--min-seconds 600] [--early 200] [--disconnect 0.1] [--seed N]
Exit status: 0 when no request that should have succeeded failed, RSS drift <= --max-drift percent
and no file-descriptor growth; 1 otherwise.
"""

import argparse
import json
import os
import random
import sys
import threading
import time

import httpx

QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "Write a haiku about the sea.",
    "What is 2 + 2?",
    "Give me a word that rhymes with cat.",
    "Why is the sky blue? One sentence.",
    "List two planets.",
    "Say hello in Spanish.",
]


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.started = 0
        self.ok = 0
        self.failed = []
        self.disconnected = 0
        self.tokens = 0
        self.samples = {}

    def next_index(self, limit):
        with self.lock:
            if self.started >= limit:
                return None
            self.started += 1
            return self.started


def random_body(rng, chat):
    body = {
        "model": "anything",
        "max_tokens": rng.randint(1, 32),
        "temperature": rng.choice([0.0, 0.3, 0.7, 1.0, 1.5]),
        "top_p": rng.choice([0.5, 0.9, 1.0]),
        "top_k": rng.choice([0, 1, 20, 40, 100]),
        "min_p": rng.choice([0.0, 0.05, 0.2]),
        "seed": rng.randint(0, 2**32 - 1),
    }
    if rng.random() < 0.3:
        body["repeat_penalty"] = rng.choice([1.0, 1.1, 1.3])
    if rng.random() < 0.2:
        body["frequency_penalty"] = rng.choice([0.0, 0.5, 1.0])
        body["presence_penalty"] = rng.choice([0.0, 0.5])
    if rng.random() < 0.2:
        body["stop"] = rng.choice(["\n", ["."], [" the", "!"]])
    q = rng.choice(QUESTIONS)
    if chat:
        msgs = [{"role": "user", "content": q}]
        if rng.random() < 0.5:
            msgs.insert(0, {"role": "system", "content": "You are a terse assistant."})
        body["messages"] = msgs
    else:
        body["prompt"] = q
    return body


def one_request(client, rng, disconnect_rate):
    """Returns (outcome, tokens): outcome is 'ok', 'disconnected' or an error string."""
    chat = rng.random() < 0.6
    path = "/v1/chat/completions" if chat else "/v1/completions"
    body = random_body(rng, chat)
    stream = rng.random() < 0.5
    body["stream"] = stream
    disconnect = rng.random() < disconnect_rate
    if stream:
        if rng.random() < 0.5:
            body["stream_options"] = {"include_usage": True}
        with client.stream("POST", path, json=body) as r:
            if r.status_code != 200:
                return f"HTTP {r.status_code}: {r.read()[:200]!r}", 0
            chunks = 0
            stop_after = rng.randint(0, 3) if disconnect else None
            done = False
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                json.loads(line[6:])
                chunks += 1
                if stop_after is not None and chunks > stop_after:
                    return "disconnected", chunks
            if not done:
                return "stream ended without [DONE]", chunks
            return "ok", chunks
    if disconnect:
        try:
            client.post(path, json=body, timeout=rng.uniform(0.01, 0.2))
        except httpx.TimeoutException:
            pass
        return "disconnected", 0
    r = client.post(path, json=body)
    if r.status_code != 200:
        return f"HTTP {r.status_code}: {r.text[:200]}", 0
    data = r.json()
    if not data.get("choices"):
        return f"no choices: {data}", 0
    return "ok", data.get("usage", {}).get("completion_tokens", 0)


def socket_client(args, stats, worker_id, pace_s):
    rng = random.Random(args.seed * 1000 + worker_id)
    transport = httpx.HTTPTransport(uds=args.socket)
    with httpx.Client(transport=transport, base_url="http://localhost", timeout=120) as client:
        while True:
            i = stats.next_index(args.requests)
            if i is None:
                return
            t0 = time.monotonic()
            try:
                outcome, tokens = one_request(client, rng, args.disconnect)
            except Exception as e:  # a failure to report, not to die of
                outcome, tokens = f"{type(e).__name__}: {e}", 0
            with stats.lock:
                if outcome == "ok":
                    stats.ok += 1
                    stats.tokens += tokens
                elif outcome == "disconnected":
                    stats.disconnected += 1
                else:
                    stats.failed.append(f"request {i}: {outcome}")
                if i in (args.early, args.requests):
                    stats.samples[i] = {"rss": rss_bytes(args.pid)}
            spare = pace_s - (time.monotonic() - t0)
            if spare > 0:
                time.sleep(spare)


def serial_client(args, stop, result):
    import serial

    port = serial.Serial(args.serial, 115200, timeout=0.5)
    buf = b""

    def read_until(marker, timeout):
        nonlocal buf
        end = time.monotonic() + timeout
        while marker not in buf:
            if time.monotonic() > end:
                return False
            buf += port.read(4096)
        buf = buf[buf.index(marker) + len(marker):]
        return True

    port.write(b"\r")
    read_until(b"> ", 30)
    port.write(b"/set max_tokens 24\r")
    read_until(b"> ", 30)
    turns = failures = 0
    rng = random.Random(args.seed)
    while not stop.is_set():
        q = rng.choice(QUESTIONS)
        port.write(q.encode() + b"\r")
        # The answer ends with a fresh prompt; the wait includes queueing behind socket clients.
        if read_until(b"\r\n> ", 300):
            turns += 1
        else:
            failures += 1
        if turns % 5 == 4:
            port.write(b"/reset\r")
            read_until(b"> ", 30)
        time.sleep(rng.uniform(0.5, 2.0))
    port.close()
    result.update({"serial_turns": turns, "serial_failures": failures})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--serial")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--min-seconds", type=float, default=600)
    ap.add_argument("--early", type=int, default=200, help="request at which the early RSS is taken")
    ap.add_argument("--disconnect", type=float, default=0.1)
    ap.add_argument("--max-drift", type=float, default=5.0, help="allowed RSS drift, percent")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    stats = Stats()
    # Each client spaces its requests so that the run lasts at least --min-seconds.
    pace_s = args.min_seconds * args.clients / max(args.requests, 1)
    serial_stop = threading.Event()
    serial_result = {}
    serial_thread = None
    if args.serial:
        serial_thread = threading.Thread(target=serial_client, args=(args, serial_stop, serial_result))
        serial_thread.start()
    fds_before = fd_count(args.pid)
    t0 = time.monotonic()
    workers = [
        threading.Thread(target=socket_client, args=(args, stats, w, pace_s)) for w in range(args.clients)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - t0
    serial_stop.set()
    if serial_thread:
        serial_thread.join()
    # Every client has closed its connections: the server must be back to where it started.
    time.sleep(1.0)
    fds_after = fd_count(args.pid)

    early = stats.samples.get(args.early, {})
    late = stats.samples.get(args.requests, {})
    drift = None
    if early and late:
        drift = 100.0 * (late["rss"] - early["rss"]) / early["rss"]
    out = {
        "requests": stats.started,
        "ok": stats.ok,
        "disconnected_on_purpose": stats.disconnected,
        "failed": len(stats.failed),
        "failures": stats.failed[:20],
        "completion_tokens": stats.tokens,
        "seconds": round(elapsed, 1),
        "rss_early_bytes": early.get("rss"),
        "rss_end_bytes": late.get("rss"),
        "rss_drift_percent": None if drift is None else round(drift, 2),
        "fds_before": fds_before,
        "fds_after": fds_after,
        "early_at_request": args.early,
    }
    out.update(serial_result)
    print(json.dumps(out, indent=2))
    good = (
        not stats.failed
        and drift is not None
        and drift <= args.max_drift
        and fds_after <= fds_before
        and serial_result.get("serial_failures", 0) == 0
    )
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
