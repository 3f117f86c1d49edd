"""The frame format, as much of it as the hostile test children need
(docs/protocol.md): the 32-byte big-endian header and reading whole frames
from the parent stream (fd 0). Imported by hostile_child.py and
hostile_peer.py, which run as scripts from this directory."""
import os
import struct

HDR = struct.Struct(">HBBIIIIIII")
MAGIC, VERSION = 0x5350, 1
CALL, LOG, ADD_ROUTE, DEL_ROUTE, SHUTDOWN, INIT = 100, 101, 102, 103, 105, 110
MODULE_REQUEST, MODULE_ANSWER = 115, 116
FLAG_ERROR = 1
HELLO = b"\nSPORE-HELLO 0.1.0\n"


def read_exact(n, fd=0):
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def read_frame(fd=0):
    """(header fields, JSON bytes, binary bytes) of the next frame."""
    h = HDR.unpack(read_exact(HDR.size, fd))
    body = read_exact(h[8], fd) if h[8] else b""
    data = read_exact(h[9], fd) if h[9] else b""
    return h, body, data


def frame(flags, dst, src, auth, handle, reply_to, body=b"", bin_len=None):
    """Header and JSON body; bin_len announces a binary part not included."""
    n_bin = 0 if bin_len is None else bin_len
    return HDR.pack(MAGIC, VERSION, flags, dst, src, auth, handle, reply_to, len(body), n_bin) + body
