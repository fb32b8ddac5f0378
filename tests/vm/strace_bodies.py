#!/usr/bin/env python3
"""Checks an `strace -f` log of edge serving over kTLS.

usage: strace_bodies.py LOG HEAD_BYTES BODY_BYTES

The first accepted socket (the start-up probe's loopback sockets are not) that gets `setsockopt(fd, SOL_TLS, TLS_TX, ...)` is the suite's
main keep-alive connection. From that call until the socket is closed:
  - every byte written with write/writev/sendto/sendmsg is a response head: their sum
    must equal HEAD_BYTES (what the client received as headers), except the 2-byte
    TLS alert record (close_notify) sent with a SOL_TLS control message;
  - sendfile() to it must carry exactly BODY_BYTES.
Over the whole log, no file opened under /tmp/www is ever read into userspace
(read/pread64/readv/preadv*). Prints one summary line; exit 0 when all hold.

With -f, strace prints a call that another thread interrupts as two lines,
`PID name(args <unfinished ...>` and later `PID <... name resumed>rest) = RET`;
they are joined back into one before parsing.
"""
import re
import sys

log, head_bytes, body_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
line_re = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+)")
content_fds = set()
accepted = set()
main_fd = None
main_done = False
written = 0
alerts = 0
sent = 0
reads_of_content = []
unfinished_re = re.compile(r"^(\d+)\s+(.*?)\s*<unfinished \.\.\.>\s*$")
resumed_re = re.compile(r"^(\d+)\s+<\.\.\. \w+ resumed>(.*)$")


def joined_lines(path):
    """The log's lines, each split call joined into one line."""
    global split_calls
    pending = {}
    for raw in open(path, errors="replace"):
        m = unfinished_re.match(raw)
        if m:
            pending[m.group(1)] = m.group(2)
            continue
        m = resumed_re.match(raw)
        if m:
            head = pending.pop(m.group(1), None)
            if head is None:
                continue
            split_calls += 1
            yield f"{m.group(1)} {head}{m.group(2)}"
            continue
        yield raw


split_calls = 0
for line in joined_lines(log):
    m = line_re.match(line)
    if not m:
        continue
    _pid, name, args, ret = m.group(1), m.group(2), m.group(3), int(m.group(4))
    fd = args.split(",", 1)[0].strip()
    fd = int(fd) if fd.lstrip("-").isdigit() else None
    # edge opens content with openat2 relative to its root descriptor.
    if ((name == "openat" and "/tmp/www/" in args) or name == "openat2") and ret >= 0:
        content_fds.add(ret)
    elif name == "accept4" and ret >= 0:
        accepted.add(ret)
    elif name == "close" and fd is not None:
        content_fds.discard(fd)
        accepted.discard(fd)
        if fd == main_fd:
            main_done = True
    elif name in ("read", "pread64", "readv", "preadv", "preadv2") and fd in content_fds:
        reads_of_content.append(line.strip())
    elif name == "setsockopt" and "SOL_TLS" in args and "TLS_TX" in args and main_fd is None and ret == 0 and fd in accepted:
        main_fd = fd
    elif main_fd is not None and not main_done and fd == main_fd and ret > 0:
        if name == "sendfile":
            sent += ret
        elif name == "sendmsg" and "SOL_TLS" in args and ret == 2:
            alerts += 1
        elif name in ("write", "writev", "sendto", "sendmsg"):
            written += ret

problems = []
if main_fd is None:
    problems.append("no TLS_TX setsockopt: nothing was offloaded")
if reads_of_content:
    problems.append(f"{len(reads_of_content)} reads of content files, first: {reads_of_content[0]}")
if sent != body_bytes:
    problems.append(f"sendfile carried {sent} bytes, expected {body_bytes}")
if written != head_bytes:
    problems.append(f"write-family bytes {written} != response heads {head_bytes}")
summary = (f"offloaded fd {main_fd}: sendfile {sent} body bytes, write/send {written} bytes "
           f"= heads {head_bytes}, {alerts} alert record(s); content files read into userspace: {len(reads_of_content)}; "
           f"{split_calls} split call(s) joined")
print(summary if not problems else "; ".join(problems) + " | " + summary)
sys.exit(1 if problems else 0)
