#!/usr/bin/env python3
"""TCP clients that connect, ask one question, and then sit idle (loopback).

Keeps COUNT connections to a DNS server for SECONDS. Each sends one query
for QNAME A, waits up to 5 s for the answer, then idles without a word until
the server closes the connection (its idle timeout), and connects again. At
the end prints how many queries were answered and how many got no answer
(lost), how many connections were made, and the most open at once.

    tcp_idlers.py ADDR PORT COUNT SECONDS QNAME
"""
import asyncio
import random
import struct
import sys
import time


def query(qname):
    ident = random.randrange(65536)
    header = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
    name = b"".join(bytes([len(p)]) + p.encode() for p in qname.strip(".").split(".")) + b"\0"
    body = header + name + struct.pack("!HH", 1, 1)
    return ident, struct.pack("!H", len(body)) + body


async def client(addr, port, qname, end, stats):
    while time.monotonic() < end:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(addr, port), 5)
        except (OSError, asyncio.TimeoutError):
            stats["refused"] += 1
            await asyncio.sleep(0.5)
            continue
        stats["connections"] += 1
        stats["open"] += 1
        stats["most"] = max(stats["most"], stats["open"])
        try:
            ident, framed = query(qname)
            writer.write(framed)
            await writer.drain()
            try:
                length = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 5))[0]
                answer = await asyncio.wait_for(reader.readexactly(length), 5)
                if struct.unpack("!H", answer[0:2])[0] == ident:
                    stats["answered"] += 1
                else:
                    stats["lost"] += 1
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, OSError):
                stats["lost"] += 1
                continue
            # Idle until the server closes, or the run ends.
            try:
                await asyncio.wait_for(reader.read(1), max(0.1, end - time.monotonic()))
            except (asyncio.TimeoutError, OSError):
                pass
        finally:
            stats["open"] -= 1
            writer.close()


async def main():
    addr, port, count, seconds, qname = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    end = time.monotonic() + seconds
    stats = {"connections": 0, "answered": 0, "lost": 0, "refused": 0, "open": 0, "most": 0}
    await asyncio.gather(*(client(addr, port, qname, end, stats) for _ in range(count)))
    print(
        f"tcp idlers: {stats['answered']} answered, {stats['lost']} lost, "
        f"{stats['connections']} connections ({stats['refused']} refused), at most {stats['most']} open at once",
        flush=True,
    )


asyncio.run(main())
