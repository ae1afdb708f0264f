"""A small TCP load balancer for the multi-instance tests: each new connection goes to
the next backend in turn (skipping one that refuses the connection), bytes are copied both
ways until either side closes. Prints 'round robin ready' once listening.

Usage: round_robin.py LISTEN_PORT BACKEND_PORT...
"""
import asyncio
import sys

listen_port = int(sys.argv[1])
backends = [int(p) for p in sys.argv[2:]]
turn = 0


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(client_reader, client_writer):
    global turn
    for _ in range(len(backends)):
        port = backends[turn % len(backends)]
        turn += 1
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            continue
    else:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    print("round robin ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
