"""One TLS context per execution environment for the HTTPS clients the core makes (the upstream's, each webhook
delivery's). Loading the CA bundle is what makes a client expensive (~20 ms of CPU); an ``ssl.SSLContext`` may
be shared by any number of clients and threads, so it is loaded once."""

from __future__ import annotations

import ssl
from functools import cache

import certifi


@cache
def tls_context() -> ssl.SSLContext:
    """What httpx verifies with by default (certifi's CA bundle), made once; pass it as ``verify=``."""
    return ssl.create_default_context(cafile=certifi.where())
