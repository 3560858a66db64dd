"""A bare grpc.aio MatchService that answers without doing anything: the benchmark's ceiling.

It receives the same request messages as matcher and answers with one empty result per query,
the size of a miss; no auth, no limits, no metrics.

Usage: ``python bench/echo_server.py HOST:PORT``.
"""

from __future__ import annotations

import asyncio
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from matcher.v1 import match_pb2, match_pb2_grpc


class Echo(match_pb2_grpc.MatchServiceServicer):
    async def Match(self, request, context):
        return match_pb2.MatchResponse(results=[match_pb2.QueryResult()] * len(request.queries))

    async def StreamMatch(self, request_iterator, context):
        async for request in request_iterator:
            yield match_pb2.StreamMatchResponse(
                results=[match_pb2.QueryResult()] * len(request.queries)
            )


async def main(address: str) -> None:
    server = grpc.aio.server()
    match_pb2_grpc.add_MatchServiceServicer_to_server(Echo(), server)
    checker = health.aio.HealthServicer()
    await checker.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
