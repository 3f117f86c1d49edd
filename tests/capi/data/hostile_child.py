#!/usr/bin/env python3
"""A hostile child context for test_hostile.c.

Run as the command_prefix of a connect through an agent, it answers the
bootstrap itself (the hello line) and then, instead of being an agent, sends
forged frames on its parent stream: calls to its parent, its sibling and the
master, with honest and with forged source and authority ids, and route
messages for ids that are not its own. Replies it receives are written to a
JSON report (argv[1]); argv[2] is the sibling's context id, argv[3] a
directory where a forged call that ran would leave a marker file.
"""
import json
import os
import sys
import time

from spore_wire import ADD_ROUTE, CALL, DEL_ROUTE, HELLO, HDR, INIT, frame, read_frame

report_path, sibling, marker_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rfd, wfd = 0, 1


def send(dst, src, auth, handle, reply_to, obj):
    body = json.dumps(obj).encode() if obj is not None else b""
    os.write(wfd, frame(0, dst, src, auth, handle, reply_to, body))


os.write(wfd, HELLO)
h, body, _ = read_frame()
assert h[6] == INIT, h
init = json.loads(body)
me = init["id"]
parent = init["parent_ids"][0]


def touch_call(tag):
    return {"fn": "proc.run", "args": {"argv": ["touch", os.path.join(marker_dir, tag)]}}


# (name, dst, src, auth, handle, reply_to, body)
attempts = [
    ("call parent", parent, me, me, CALL, 5001, touch_call("parent")),
    ("call parent as master", parent, me, 0, CALL, 5002, touch_call("parent-as-master")),
    ("call parent from master", parent, 0, 0, CALL, 5003, touch_call("parent-from-master")),
    ("call parent as parent", parent, me, parent, CALL, 5004, touch_call("parent-as-parent")),
    ("call sibling", sibling, me, me, CALL, 5005, touch_call("sibling")),
    ("call sibling as master", sibling, me, 0, CALL, 5006, touch_call("sibling-as-master")),
    ("call sibling from master", sibling, 0, 0, CALL, 5007, touch_call("sibling-from-master")),
    ("call master", 0, me, me, CALL, 5008, touch_call("master")),
    ("call self via parent", me, me, me, CALL, 5009, touch_call("self")),
    ("claim sibling route", parent, me, me, ADD_ROUTE, 0, {"id": sibling, "name": "hijack"}),
    ("claim master route", parent, me, me, ADD_ROUTE, 0, {"id": 0, "name": "hijack"}),
    ("drop sibling route", parent, me, me, DEL_ROUTE, 0, {"id": sibling, "reason": "forged"}),
    ("call sibling after claims", sibling, me, me, CALL, 5010, touch_call("sibling-after-claims")),
]
for a in attempts:
    send(*a[1:])

# Collect whatever comes back for a moment.
replies = {}
os.set_blocking(rfd, False)
deadline = time.time() + 1.5
buf = b""
while time.time() < deadline:
    try:
        chunk = os.read(rfd, 65536)
        if not chunk:
            break
        buf += chunk
    except BlockingIOError:
        time.sleep(0.01)
    while len(buf) >= HDR.size:
        h = HDR.unpack(buf[:HDR.size])
        total = HDR.size + h[8] + h[9]
        if len(buf) < total:
            break
        body = buf[HDR.size:HDR.size + h[8]]
        buf = buf[total:]
        try:
            obj = json.loads(body) if body else None
        except ValueError:
            obj = None
        replies[str(h[6])] = {"flags": h[2], "src": h[4], "body": obj}

with open(report_path + ".tmp", "w") as f:
    json.dump({"me": me, "parent": parent, "replies": replies}, f)
os.rename(report_path + ".tmp", report_path)
# Stay until the parent closes the stream.
os.set_blocking(rfd, True)
try:
    while os.read(rfd, 65536):
        pass
except OSError:
    pass
