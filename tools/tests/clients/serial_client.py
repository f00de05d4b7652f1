#!/usr/bin/env python3
"""A person (and a microcontroller) at the other end of edgellm's serial console, over pyserial.

Run by tools/tests/serve_serial.rs on one end of a socat pty pair whose other end
`edgellm serve --serial` holds. Prints one JSON object with what the console showed at each
step on stdout; the Rust test judges it. Exits non-zero (message on stderr) when the console
does not answer in time or writes bytes that are not UTF-8.

    serial_client.py DEVICE session   # the full walk: answers, Ctrl-C, bad input, json mode
    serial_client.py DEVICE again     # after the device came back: it answers again
"""

import json
import sys
import time

import serial

PROMPT = b"\r\n> "
TIMEOUT = 60.0


class Console:
    def __init__(self, device):
        self.port = serial.Serial(device, 115200, timeout=0.05)
        self.buf = b""

    def send(self, data):
        self.port.write(data)
        self.port.flush()

    def read_until(self, marker, timeout=TIMEOUT):
        """Everything shown up to and including `marker` (bytes), as text."""
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            if time.monotonic() > deadline:
                sys.exit(f"no {marker!r} from the console within {timeout}s; it showed {self.buf!r}")
            self.buf += self.port.read(4096)
        i = self.buf.index(marker) + len(marker)
        shown, self.buf = self.buf[:i], self.buf[i:]
        try:
            return shown.decode("utf-8")
        except UnicodeDecodeError as e:
            sys.exit(f"the console wrote bytes that are not UTF-8 ({e}): {shown!r}")

    def read_at_least(self, n, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            if time.monotonic() > deadline:
                sys.exit(f"fewer than {n} bytes from the console: {self.buf!r}")
            self.buf += self.port.read(4096)

    def line(self, text, end=b"\r"):
        """Types a line and returns what the console showed up to its next prompt."""
        self.send(text.encode("utf-8") + end)
        return self.read_until(PROMPT)

    def sync(self, timeout=TIMEOUT):
        """An empty line until the console shows its prompt (it may not be open yet)."""
        deadline = time.monotonic() + timeout
        while True:
            self.send(b"\r")
            got = self.port.read(4096)
            self.buf += got
            if PROMPT in self.buf or b"> " in self.buf:
                time.sleep(0.3)  # let the echoes of earlier CRs arrive, then drop them
                self.buf += self.port.read(4096)
                self.buf = b""
                return
            if time.monotonic() > deadline:
                sys.exit(f"the console never showed its prompt: {self.buf!r}")
            time.sleep(0.5)

    def json_reply(self):
        """JSON lines up to the one that ends a request (done or error)."""
        lines = []
        while True:
            text = self.read_until(b"\r\n")
            value = json.loads(text)
            lines.append(value)
            if "done" in value or "error" in value or "mode" in value:
                return lines


def session(c):
    out = {}
    c.sync()
    out["set"] = [c.line("/set max_tokens 16"), c.line("/set temp 0")]

    # A question: echoed, then the streamed answer, then the prompt.
    q = "What is the capital of France?"
    out["answer"] = c.line(q, end=b"\r\n")

    # A long answer interrupted with Ctrl-C.
    c.line("/set max_tokens 400")
    c.send(b"Write a long story about a dragon.\r")
    c.read_until(b"dragon.\r\n")
    c.read_at_least(80)
    pressed = time.monotonic()
    c.send(b"\x03")
    out["interrupted"] = c.read_until(b"\r\n> ")
    out["interrupt_seconds"] = time.monotonic() - pressed
    c.line("/set max_tokens 16")
    out["after_interrupt"] = c.line("Name a fruit.")

    # A line longer than the console's line buffer (1024 bytes without a board config).
    out["overlong"] = c.line("x" * 1100)
    out["after_overlong"] = c.line("Name a colour.")

    # Bytes that are not UTF-8, inside a question that still gets answered.
    c.send(b"Name an \xff\xfeanimal.\r")
    out["invalid"] = c.read_until(PROMPT)

    # json mode and back.
    c.send(b"/mode json\r")
    c.read_until(b'{"mode":"json"}\r\n')
    c.send(b'{"prompt": "The sky is", "max_tokens": 8, "temperature": 0}\r\n')
    out["json_prompt"] = c.json_reply()
    c.send(
        b'{"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8, "seed": 3}\r'
    )
    out["json_chat"] = c.json_reply()
    c.send(b'{"prompt": 5}\r')
    out["json_error"] = c.json_reply()
    c.send(b'{"mode": "human"}\r')
    out["back_to_human"] = c.read_until(b"> ")
    out["final_answer"] = c.line("What is two plus two?")
    return out


def again(c):
    c.sync()
    c.line("/set max_tokens 8")
    return {"answer": c.line("Name a bird.")}


def main():
    device, scenario = sys.argv[1], sys.argv[2]
    c = Console(device)
    result = {"session": session, "again": again}[scenario](c)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
