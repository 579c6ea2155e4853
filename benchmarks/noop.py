"""The baseline of the warm path: an aiohttp TLS endpoint that parses the review and answers allowed.

    python -m benchmarks.noop CERT KEY    # prints "listening on https://127.0.0.1:PORT"

It runs on the same stack as ``mutator serve`` (aiohttp, uvloop when installed,
orjson), so the ratio measures what the webhook adds, not a library choice.
"""

from __future__ import annotations

import sys

import orjson
from aiohttp import web

from mutator.serve import tls


async def allow(request: web.Request) -> web.Response:
    review = orjson.loads(await request.read())
    answer = {"apiVersion": review["apiVersion"], "kind": review["kind"],
              "response": {"uid": review["request"]["uid"], "allowed": True}}
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


async def main(cert: str, key: str) -> None:
    app = web.Application(client_max_size=3 * 1024 * 1024 + 1)
    app.router.add_post("/mutate/{mode}", allow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server_context(cert, key))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"listening on https://127.0.0.1:{port}", flush=True)
    try:
        import asyncio

        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        import asyncio
        run = asyncio.run
    run(main(sys.argv[1], sys.argv[2]))
