#!/usr/bin/env python3
"""A DNS upstream that flaps, for bench/soak_reliability.sh (loopback only).

Listens on UDP at every ADDR:PORT given. For PERIOD seconds it answers every
query with one A record (198.51.100.7, TTL 10) built from the query's own
header and question; for the next PERIOD seconds it answers nothing; and so
on. Names under `flood.test.` are never answered (the same-name flood of the
soak waits on them). Prints each change of phase, and the totals on SIGTERM.

    flappy_upstream.py PERIOD_SECONDS ADDR:PORT [ADDR:PORT ...]
"""
import asyncio
import signal
import struct
import sys
import time


class Flappy(asyncio.DatagramProtocol):
    def __init__(self, state):
        self.state = state

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if len(data) < 12 or struct.unpack("!H", data[4:6])[0] != 1:
            return
        at = 12
        labels = []
        while at < len(data) and data[at] != 0:
            if data[at] > 63:
                return
            labels.append(data[at + 1 : at + 1 + data[at]].lower())
            at += 1 + data[at]
        end = at + 5
        if end > len(data):
            return
        self.state["seen"] += 1
        if not self.state["up"] or labels[-2:] == [b"flood", b"test"]:
            self.state["dropped"] += 1
            return
        flags = 0x8180 | (struct.unpack("!H", data[2:4])[0] & 0x0100)
        header = data[0:2] + struct.pack("!HHHHH", flags, 1, 1, 0, 0)
        answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 10, 4) + bytes([198, 51, 100, 7])
        self.transport.sendto(header + data[12:end] + answer, addr)
        self.state["answered"] += 1


async def flap(state, period):
    while True:
        await asyncio.sleep(period)
        state["up"] = not state["up"]
        print(f"{time.strftime('%H:%M:%S')} upstream {'answering' if state['up'] else 'dead'}", flush=True)


async def main():
    period = float(sys.argv[1])
    state = {"up": True, "seen": 0, "answered": 0, "dropped": 0}
    loop = asyncio.get_running_loop()
    transports = []
    for spec in sys.argv[2:]:
        addr, port = spec.rsplit(":", 1)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: Flappy(state), local_addr=(addr, int(port))
        )
        transports.append(transport)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    print(f"{time.strftime('%H:%M:%S')} flappy upstream on {' '.join(sys.argv[2:])}, period {period}s, answering", flush=True)
    flapping = asyncio.ensure_future(flap(state, period))
    await stop
    flapping.cancel()
    print(f"flappy upstream: {state['seen']} queries, {state['answered']} answered, {state['dropped']} dropped", flush=True)
    for transport in transports:
        transport.close()


asyncio.run(main())
