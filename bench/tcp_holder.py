#!/usr/bin/env python3
"""Holds as many TCP connections to a DNS server as it will take (loopback).

Opens COUNT connections, each sending the first byte of a length prefix and
nothing more (a slowloris), re-opening any the server closes, for SECONDS.
Every second it prints how many are open; at the end, the most held at once
and how many the server closed. With max_tcp_connections = M the server must
never let more than M stay open.

    tcp_holder.py ADDR PORT COUNT SECONDS
"""
import socket
import sys
import time

addr, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
end = time.monotonic() + seconds
open_socks = []
closed = 0
most = 0
next_report = time.monotonic()
while time.monotonic() < end:
    while len(open_socks) < count:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(True)
        s.settimeout(1)
        try:
            s.connect((addr, port))
            s.send(b"\x00")
            s.setblocking(False)
            open_socks.append(s)
        except OSError:
            s.close()
            closed += 1
            break
    time.sleep(0.2)
    still = []
    for s in open_socks:
        try:
            data = s.recv(16)
            if data == b"":
                s.close()
                closed += 1
                continue
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            closed += 1
            continue
        still.append(s)
    open_socks = still
    most = max(most, len(open_socks))
    if time.monotonic() >= next_report:
        next_report += 1
        print(f"tcp holder: {len(open_socks)} open", flush=True)
for s in open_socks:
    s.close()
print(f"tcp holder: at most {most} held open at once; the server closed {closed}", flush=True)
