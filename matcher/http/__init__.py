"""The HTTP/JSON API beside gRPC and the web app's files (``matcher serve --http-address``).

A gateway in the ``matcher serve`` process calls the process's own gRPC server (see
``matcher.http.gateway`` for why), so keys, roles, limits and errors are the gRPC ones. Like
``matcher.service``, nothing here imports ``matcher.hashing``: images never reach the server.
"""

from matcher.http.config import WEB_ROOT, HttpConfig

__all__ = ["WEB_ROOT", "HttpConfig"]
