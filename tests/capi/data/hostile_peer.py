#!/usr/bin/env python3
"""A hostile child context for test_hostile.c: hostile *answers*, not calls.

Run as the command_prefix of a connect, it answers the bootstrap itself
(the hello line), takes the init message and then behaves as MODE says:

  huge-header       sends one frame header announcing a 127 MiB body and
                    never the body (the parent must not allocate for it)
  deep-reply        answers every call with JSON nested 10,000 deep
  deep-error        answers every call with an *error* nested 10,000 deep
  bad-utf8-reply    answers every call with a string of invalid UTF-8
  nul-reply         answers every call with a string holding \\u0000
  big-logs N BYTES  sends N log records of BYTES characters each, then
                    answers calls with true
  deep-log          sends a log record nested 10,000 deep, then one honest
                    record "after the deep one", and answers calls with true
  module-requests   asks its parent for Python modules by hostile names
                    (paths, "..", names of files outside any module) and
                    reports each answer in a log record "answer: <json>"

It stays until the parent closes the stream (or sends shutdown).
"""
import json
import os
import sys

from spore_wire import CALL, FLAG_ERROR, HELLO, INIT, LOG, MODULE_ANSWER, MODULE_REQUEST, SHUTDOWN, frame, read_frame

mode = sys.argv[1]
rfd, wfd = 0, 1


def send(dst, src, handle, body, flags=0, bin_len=None):
    os.write(wfd, frame(flags, dst, src, src, handle, 0, body, bin_len))


def deep(n):
    return b"[" * n + b"]" * n


os.write(wfd, HELLO)
h, body, _ = read_frame()
assert h[6] == INIT, h
me = json.loads(body)["id"]

if mode == "huge-header":
    send(0, me, LOG, b"", bin_len=127 << 20)
elif mode == "big-logs":
    count, size = int(sys.argv[2]), int(sys.argv[3])
    for i in range(count):
        rec = {"logger": "hostile", "level": 30, "msg": "%d:" % i + "x" * size}
        send(0, me, LOG, json.dumps(rec).encode())
elif mode == "deep-log":
    send(0, me, LOG, b'{"logger":"hostile","level":30,"msg":' + deep(10000) + b"}")
    send(0, me, LOG, json.dumps({"logger": "hostile", "level": 30, "msg": "after the deep one"}).encode())

elif mode == "module-requests":
    parent = json.loads(body)["parent_ids"][0]
    for names in (["/etc/shadow", "../../etc/passwd", "etc.shadow", "etc", "shadow", "spore:worker"],
                  ["a" * 300], ["x"] * 65):
        send(parent, me, MODULE_REQUEST, json.dumps({"names": names}).encode())
    send(parent, me, MODULE_REQUEST, b'{"names": "not a list"}')
    send(parent, me, MODULE_REQUEST, json.dumps({"names": ["done"]}).encode())
    while True:
        h, body, data = read_frame()
        if h[6] != MODULE_ANSWER:
            continue
        entries = json.loads(body)["modules"]
        report = {"entries": [[e["name"][:40], e["found"], e.get("length", 0), e.get("reason", "")]
                              for e in entries],
                  "has_shadow": b"root:" in data}
        send(0, me, LOG, json.dumps({"logger": "hostile", "level": 30,
                                     "msg": "answer: " + json.dumps(report)}).encode())
        if any(e["name"] == "done" for e in entries):
            break

answers = {
    "deep-reply": (0, deep(10000)),
    "deep-error": (FLAG_ERROR, b'{"code":"EREMOTE","message":' + deep(10000) + b"}"),
    "bad-utf8-reply": (0, b'{"s":"\xff\xfe\xc0\x80"}'),
    "nul-reply": (0, b'{"s":"a\\u0000b"}'),
}
try:
    while True:
        h, body, _ = read_frame()
        if h[6] == SHUTDOWN:
            break
        if h[6] != CALL or not h[7]:
            continue
        flags, reply = answers.get(mode, (0, b"true"))
        # A reply goes to the caller's handle (reply_to), from this context.
        os.write(wfd, frame(flags, h[4], me, me, h[7], 0, reply))
except (EOFError, OSError):
    pass
