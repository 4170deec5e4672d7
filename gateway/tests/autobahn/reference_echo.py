#!/usr/bin/env python3
"""Reference WebSocket echo server, used to prove the Autobahn harness.

Serves the same surface the gateway exposes with `--echo`:

* ``ws://HOST:PORT/echo``  - echoes every text/binary message back unchanged;
* ``GET /healthz``         - plain HTTP 200 (readiness probe used by run.sh);
* anything else            - HTTP 404.

It is built on the `websockets` package (pinned in requirements.txt), which is
itself Autobahn-clean, so a harness run against it must come out all green:

    gateway/tests/autobahn/run.sh --reference

Settings that matter for the Autobahn cases:

* ``compression=None``   - no permessage-deflate (cases 12.* / 13.* are
  excluded from the run anyway);
* ``ping_interval=None`` - no unsolicited pings, which would show up as
  unexpected events in the cases' event sequences;
* ``max_size=2**25``     - 9.* sends messages of up to 16 MiB; the default
  1 MiB limit would close those with 1009;
* ``max_queue=1``        - echo one message at a time (back-pressure);
* ``WEBSOCKETS_MAX_FRAGMENTS`` raised from websockets' default of 4096:
  9.3.1 / 9.4.1 send a 4 MiB message in 64-byte fragments (65536 frames),
  which websockets >= 16 would otherwise refuse with 1009 "too many
  fragments". This is a configuration knob, not a protocol change.

One behaviour of websockets is patched (see `_allow_close_mid_message`):
its sans-I/O core answers a Close frame that arrives in the middle of a
fragmented message with 1002 "incomplete fragmented message". RFC 6455 5.4
lets control frames (Close included) be injected between fragments, and
Autobahn case 7.1.5 expects a clean close with 1000 there, so unpatched
websockets (15.x and 17.x alike) FAILS 7.1.5. The gateway must get this right
on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from http import HTTPStatus

# Must be set before websockets is imported (read at import time).
os.environ.setdefault("WEBSOCKETS_MAX_FRAGMENTS", str(1 << 20))

from websockets.asyncio.server import ServerConnection, serve  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.frames import Frame, Opcode  # noqa: E402
from websockets.http11 import Request, Response  # noqa: E402
from websockets.protocol import Protocol  # noqa: E402


def _allow_close_mid_message() -> None:
    """Accept a Close frame between the fragments of a message (Autobahn 7.1.5).

    The partial message is dropped and the close handshake proceeds normally
    (websockets echoes the peer's 1000); anything after the Close is discarded
    by websockets as usual.
    """
    original = Protocol.recv_frame

    def recv_frame(self: Protocol, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE and getattr(self, "current_size", None) is not None:
            self.current_size = None
        original(self, frame)

    Protocol.recv_frame = recv_frame  # type: ignore[method-assign]


_allow_close_mid_message()


async def echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        # Protocol errors (bad UTF-8, bad opcodes, ...) end the connection;
        # websockets has already sent the right close frame.
        pass


def process_request(connection: ServerConnection, request: Request) -> Response | None:
    path = request.path.split("?", 1)[0]
    if path == "/healthz":
        return connection.respond(HTTPStatus.OK, "ok\n")
    if path != "/echo":
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
    return None  # continue with the WebSocket handshake


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(
            sig, lambda: stop.done() or stop.set_result(None)
        )

    server = await serve(
        echo,
        args.host,
        args.port,
        process_request=process_request,
        server_header="websockets-reference-echo",
        compression=None,
        ping_interval=None,
        max_size=2**25,
        max_queue=1,
    )
    print(f"reference echo server on ws://{args.host}:{args.port}/echo", flush=True)
    await stop
    # Exit promptly on SIGTERM: a handler can linger for up to close_timeout
    # on a connection the client already dropped; don't wait for that.
    server.close()
    try:
        await asyncio.wait_for(server.wait_closed(), timeout=1)
    except asyncio.TimeoutError:
        pass


if __name__ == "__main__":
    asyncio.run(main())
