"""The gRPC service (``matcher.v1``) over the bank: a thin layer.

Server modules never import ``matcher.hashing`` (rule 1 of DESIGN.md: no images in the
service); a test checks it.
"""

from matcher.service.server import Server, ServerConfig, TlsConfig, configure_logging, serve
from matcher.service.servicer import ServiceLimits

__all__ = ["Server", "ServerConfig", "ServiceLimits", "TlsConfig", "configure_logging", "serve"]
