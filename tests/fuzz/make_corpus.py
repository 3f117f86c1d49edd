#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_decoder into tests/fuzz/corpus/.

Each file is a raw byte stream as a peer would send it: frames of a 32-byte
big-endian header (magic "SP", version 1, flags, dst_id, src_id, auth_id,
handle, reply_to, json_len, bin_len), then the JSON part, then the binary part.
Run: python3 tests/fuzz/make_corpus.py [outdir]
"""
import os
import struct
import sys

MAGIC = 0x5350
VERSION = 1
FLAG_ERROR = 0x01
HANDLE_CALL, HANDLE_LOG, HANDLE_SHUTDOWN = 100, 101, 105


def frame(handle, json=b"", binary=b"", dst=1, src=0, auth=0, reply_to=0, flags=0,
          magic=MAGIC, version=VERSION, json_len=None, bin_len=None):
    if isinstance(json, str):
        json = json.encode()
    hdr = struct.pack(">HBBIIIIIII", magic, version, flags, dst, src, auth, handle, reply_to,
                      len(json) if json_len is None else json_len,
                      len(binary) if bin_len is None else bin_len)
    assert len(hdr) == 32
    return hdr + json + binary


def corpus():
    call = '{"fn":"spore.echo","args":[1,"two",{"three":3.5}],"kwargs":{},"chain":null}'
    yield "valid_call", frame(HANDLE_CALL, call, reply_to=1000)

    yield "valid_stream", b"".join([
        frame(HANDLE_LOG, '{"level":20,"name":"x","msg":"hello \\"quoted\\" [not nested]"}',
              dst=0, src=2, auth=2),
        frame(1001, '{"ok":true}', bytes(range(256)), dst=0, src=2, auth=2),
        frame(1002, '{"error":"ETIMEDOUT","message":"late"}', flags=FLAG_ERROR, dst=0, src=2),
        frame(HANDLE_SHUTDOWN),  # header only
    ])

    yield "invalid_magic", b"GET / HTTP/1.1\r\nHost: spore\r\n\r\n"

    # Hostile sizes: must be refused from the header alone, with no allocation.
    yield "invalid_huge", (frame(HANDLE_CALL, "{}") +
                           frame(HANDLE_CALL, "", bin_len=0xFFFFFFFF) + b"\0" * 16)

    # Frames that decode but whose JSON is rejected (too deep, malformed,
    # trailing data), then a bad version and a truncated frame.
    deep = "[" * 65 + "]" * 65
    yield "invalid_json", b"".join([
        frame(HANDLE_CALL, deep),
        frame(HANDLE_CALL, '{"fn":"f","args":[1,2'),
        frame(HANDLE_CALL, '{"n":1e300} x'),
        frame(HANDLE_CALL, '{"id":1e300,"reply_to":-1e19,"fn":7,"ok":"yes"}'),  # getters' fallbacks
        frame(HANDLE_CALL, "{}", version=2),
    ]) + frame(HANDLE_CALL, '{"truncated":true}')[:40]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
    os.makedirs(out, exist_ok=True)
    for name, data in corpus():
        with open(os.path.join(out, name + ".bin"), "wb") as f:
            f.write(data)
        print(f"{name}.bin: {len(data)} bytes")


if __name__ == "__main__":
    main()
