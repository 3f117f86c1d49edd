#!/usr/bin/env python3
"""A hostile Python worker for test_python.c: given as a context's
python_path ("/usr/bin/python3 hostile_python.py MODE"), it is started in
place of the real worker, takes the worker source the agent sends on fd 3,
says hello, and then behaves as MODE says:

  shadow      asks for the module "/etc/shadow"
  dotdot      asks for the module "../../etc/passwd"
  garbage     writes bytes that are not a frame
  stray-reply answers a job that was never sent
  bad-json    answers the call with JSON that is not JSON

The agent must kill it and fail the call with EWORKER, sending nothing on.
"""
import json
import os
import struct
import sys

HDR = struct.Struct(">HBBIIIIIII")
mode = sys.argv[1]
fd = 3


def read_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            sys.exit(0)
        buf += chunk
    return buf


def send(handle, body=b"", reply_to=0, flags=0):
    os.write(fd, HDR.pack(0x5350, 1, flags, 0, 0, 0, handle, reply_to, len(body), 0) + body)


line = b""
while not line.endswith(b"\n"):
    line += read_exact(1)
read_exact(int(line))
send(10, json.dumps({"version": "hostile", "pid": os.getpid()}).encode())
h = HDR.unpack(read_exact(HDR.size))
read_exact(h[8] + h[9])
job = h[7]
if mode == "shadow":
    send(13, json.dumps({"names": ["/etc/shadow"]}).encode())
elif mode == "dotdot":
    send(13, json.dumps({"names": ["../../etc/passwd"]}).encode())
elif mode == "garbage":
    os.write(fd, b"GET /etc/shadow HTTP/1.0\r\n\r\n" + b"\0" * 64)
elif mode == "stray-reply":
    send(11, b"true", reply_to=job + 1000)
elif mode == "bad-json":
    send(11, b'{"a": [1, 2', reply_to=job)
# Wait to be killed; the agent must not wait for anything from here on.
while os.read(fd, 65536):
    pass
