"""Several clients of `edgellm serve` at once over its Unix socket, started in order.

Usage: concurrent_clients.py SOCKET N_CLIENTS DELAY_S MAX_TOKENS [--long-first] [--disconnect I]

Client i starts DELAY_S after client i-1 and streams a chat answer of at most MAX_TOKENS
tokens at temperature 0. With --long-first, client 0 asks for a long answer (and holds the
engine); with --disconnect I, client I hangs up after its first content chunk. Prints one JSON
object: per client its status, the answer's id (`chatcmpl-N`, numbered in the order requests
enter the engine's queue), the order clients finished in, and times in seconds since the first
start.
"""
import json
import sys
import threading
import time

import httpx


def main():
    sock, n, delay, max_tokens = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    long_first = "--long-first" in sys.argv
    disconnect = int(sys.argv[sys.argv.index("--disconnect") + 1]) if "--disconnect" in sys.argv else -1
    t0 = time.monotonic()
    lock = threading.Lock()
    finished = []
    results = [None] * n

    # Clients (and their TLS contexts, which httpx builds even for a socket) are made up front so
    # each thread sends its request right away.
    https = [httpx.Client(transport=httpx.HTTPTransport(uds=sock), timeout=120) for _ in range(n)]

    def client(i):
        long = (long_first and i == 0) or i == disconnect
        body = {
            "messages": [{"role": "user", "content": f"Count from {i} to {i + 5}." if not long else "Write a very long story about a dragon."}],
            "temperature": 0,
            "max_tokens": 400 if long else max_tokens,
            "stream": True,
        }
        r = {"status": None, "text": "", "finish": None, "done": False, "start": time.monotonic() - t0}
        with https[i] as http:
            with http.stream("POST", "http://localhost/v1/chat/completions", json=body) as resp:
                r["status"] = resp.status_code
                if resp.status_code == 200:
                    for line in resp.iter_lines():
                        if not line.startswith("data: "):
                            continue
                        data = line[len("data: "):]
                        if data == "[DONE]":
                            r["done"] = True
                            break
                        chunk = json.loads(data)
                        r["id"] = chunk["id"]
                        for c in chunk["choices"]:
                            r["text"] += c["delta"].get("content") or ""
                            r["finish"] = c["finish_reason"] or r["finish"]
                        if i == disconnect and r["text"]:
                            r["disconnected"] = True
                            break
                else:
                    r["error"] = json.loads(resp.read())["error"]
        r["end"] = time.monotonic() - t0
        with lock:
            finished.append(i)
        results[i] = r

    threads = []
    for i in range(n):
        t = threading.Thread(target=client, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(delay)
    for t in threads:
        t.join()
    print(json.dumps({"results": results, "finish_order": finished}))


if __name__ == "__main__":
    main()
