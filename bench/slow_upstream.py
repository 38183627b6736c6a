#!/usr/bin/env python3
"""A deliberately slow DNS upstream for bench/soak.sh (loopback only).

Answers every UDP query after DELAY seconds with one A record (198.51.100.7,
TTL 300), built from the query's own header and question. Prints how many
queries it saw and the most it held at once when it gets SIGTERM.

    slow_upstream.py ADDR PORT DELAY_SECONDS
"""
import asyncio
import signal
import struct
import sys


class Slow(asyncio.DatagramProtocol):
    def __init__(self, delay):
        self.delay = delay
        self.seen = 0
        self.holding = 0
        self.most = 0

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if len(data) < 12:
            return
        qdcount = struct.unpack("!H", data[4:6])[0]
        if qdcount != 1:
            return
        # End of the question: the name (uncompressed in a query), then 4 bytes.
        at = 12
        while at < len(data) and data[at] != 0:
            if data[at] > 63:
                return
            at += 1 + data[at]
        end = at + 5
        if end > len(data):
            return
        self.seen += 1
        self.holding += 1
        self.most = max(self.most, self.holding)
        flags = 0x8180 | (struct.unpack("!H", data[2:4])[0] & 0x0100)
        header = data[0:2] + struct.pack("!HHHHH", flags, 1, 1, 0, 0)
        answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + bytes([198, 51, 100, 7])
        reply = header + data[12:end] + answer
        asyncio.get_running_loop().call_later(self.delay, self.send, reply, addr)

    def send(self, reply, addr):
        self.holding -= 1
        self.transport.sendto(reply, addr)


async def main():
    addr, port, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: Slow(delay), local_addr=(addr, port)
    )
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    print(f"slow upstream on {addr}:{port}, delay {delay}s", flush=True)
    await stop
    print(f"slow upstream: {proto.seen} queries, at most {proto.most} held at once", flush=True)
    transport.close()


asyncio.run(main())
