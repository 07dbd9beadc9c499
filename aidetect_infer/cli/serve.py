"""``python -m aidetect_infer serve``: the HTTP service on uvicorn.

Importing this module costs nothing: FastAPI and uvicorn are imported only when the command runs. The port
is bound and the model loaded before the server starts, so a taken port or a bad bundle fails at once with the
command line's exit code; then the address goes to stderr as ``serving NAME on http://HOST:PORT`` (``--port 0``
picks a free port). Any address but loopback needs an API key (:func:`api_key_from_args`).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys

from aidetect_infer.cli.common import Command, add_model_arguments, load_detector
from aidetect_infer.errors import ExitCode, InvalidValueError, UsageError
from aidetect_infer.serve.config import (
    DEFAULT_MAX_BATCH_TEXTS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_QUEUE_TEXTS,
    DEFAULT_MAX_TEXTS_PER_REQUEST,
    DEFAULT_MAX_WAIT_MS,
    ServeConfig,
)
from aidetect_infer.serve.errors import SERVE_EXTRA_HINT, MissingExtraError

logger = logging.getLogger(__name__)

DEFAULT_GRACEFUL_TIMEOUT_S = 30
API_KEY_ENV = "AIDETECT_API_KEY"
# Windows per ONNX Runtime call on the CPU. Measured with the int8 MiniLM-sized model, CPU time per text:
# ~200-token texts 14.7 / 16.5 / 19.5 / 37 ms at 1 / 4 / 8 / 32, ~55-token texts 6.6 / 5.7 / 5.8 / 8.0 ms.
CPU_BATCH_SIZE = 4


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    net = parser.add_argument_group("server")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    net.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one (default 8000)")
    net.add_argument(
        "--graceful-timeout",
        type=int,
        default=DEFAULT_GRACEFUL_TIMEOUT_S,
        metavar="S",
        help="on SIGTERM/SIGINT, seconds to let in-flight requests finish (default 30)",
    )
    net.add_argument("--access-log", action="store_true", help="log every request")
    net.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"require this key on every request but /healthz, /readyz and the web page (default ${API_KEY_ENV}); "
        "needed to listen on any address but loopback",
    )
    net.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let pages from this origin (https://host[:port]) call the service from a browser; repeatable; "
        "'*' for any (default: no cross-origin access)",
    )
    batch = parser.add_argument_group("batching and limits")
    options: list[tuple[str, type, object, str, str]] = [
        ("--max-batch-texts", int, DEFAULT_MAX_BATCH_TEXTS, "N", "most texts scored together"),
        ("--max-wait-ms", float, DEFAULT_MAX_WAIT_MS, "MS", "how long a batch may wait to fill"),
        ("--workers", int, 1, "N", "inference threads, one batch each"),
        ("--max-queue", int, DEFAULT_MAX_QUEUE_TEXTS, "N", "most texts waiting; beyond it 503"),
        ("--max-texts-per-request", int, DEFAULT_MAX_TEXTS_PER_REQUEST, "N", "beyond it 413"),
        ("--max-body-bytes", int, DEFAULT_MAX_BODY_BYTES, "N", "largest request body; beyond it 413"),
    ]
    for flag, kind, default, metavar, text in options:
        batch.add_argument(flag, type=kind, default=default, metavar=metavar, help=f"{text} (default {default})")
    batch.add_argument("--no-batching", action="store_true", help="score each request on its own (for comparison)")
    add_model_arguments(parser)
    # Unless given, windows per ONNX Runtime call follow the provider: see default_batch_size().
    parser.set_defaults(batch_size=None)
    for action in parser._actions:
        if action.dest == "batch_size":
            action.help = f"windows per ONNX Runtime call (default {CPU_BATCH_SIZE} on the CPU, a whole batch on a GPU)"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) reaches this machine only: every address it resolves to is
    loopback. A name that does not resolve counts as not loopback."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def api_key_from_args(args: argparse.Namespace) -> str | None:
    """The API key (``--api-key``, else ``$AIDETECT_API_KEY``), refusing a non-loopback address without one.

    Raises:
        UsageError: An empty key, or ``--host`` not loopback and no key.
    """
    key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    if key is not None and not key.strip():
        raise UsageError(f"the API key (--api-key or ${API_KEY_ENV}) is empty")
    if key is None and not is_loopback(args.host):
        raise UsageError(
            f"listening on {args.host} (not loopback) needs an API key: pass --api-key KEY or set ${API_KEY_ENV}, "
            "or put the service behind a proxy that listens there and serve on 127.0.0.1"
        )
    return key


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The :class:`ServeConfig` the command-line options describe.

    Raises:
        UsageError: An option out of range, or a non-loopback ``--host`` without an API key.
    """
    api_key = api_key_from_args(args)
    try:
        return ServeConfig(
            max_batch_texts=args.max_batch_texts,
            max_wait_ms=args.max_wait_ms,
            max_queue_texts=args.max_queue,
            max_texts_per_request=args.max_texts_per_request,
            max_body_bytes=args.max_body_bytes,
            workers=args.workers,
            batching=not args.no_batching,
            api_key=api_key,
            cors_origins=tuple(args.cors_origin),
        )
    except InvalidValueError as exc:
        raise UsageError(str(exc)) from exc


def default_batch_size(provider: str, config: ServeConfig) -> int:
    """Windows per ONNX Runtime call when ``--batch-size`` is not given.

    A whole batch in one call on a GPU; on the CPU, calls of :data:`CPU_BATCH_SIZE` windows, because larger
    calls cost more CPU time per text there (activations outgrow the caches, padding grows).

    Raises:
        InvalidValueError: Unknown provider name.
        ProviderUnavailableError: An explicit GPU provider this onnxruntime build lacks.
    """
    import onnxruntime as ort

    from aidetect_infer.session import GPU_PROVIDERS, resolve_providers

    gpu = resolve_providers(provider, ort.get_available_providers())[0][0] in GPU_PROVIDERS
    return config.max_batch_texts if gpu else min(CPU_BATCH_SIZE, config.max_batch_texts)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when ``host`` is an IPv6 address).

    Raises:
        UsageError: The port is out of range, or the address cannot be bound (in use, not local).
    """
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be in [0, 65535], got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def _run(args: argparse.Namespace) -> int:
    if args.graceful_timeout < 0:
        raise UsageError(f"--graceful-timeout must be >= 0, got {args.graceful_timeout}")
    config = config_from_args(args)
    try:
        import uvicorn

        from aidetect_infer.serve.app import create_app
    except ImportError as exc:
        raise MissingExtraError(
            f"the serve command needs {exc.name or 'FastAPI and uvicorn'}: {SERVE_EXTRA_HINT}"
        ) from exc
    if args.batch_size is None:
        args.batch_size = default_batch_size(args.provider, config)
    sock = bind(args.host, args.port)  # before the model loads: a taken port fails at once
    try:
        detector = load_detector(args)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {detector.metadata.name} on http://{shown}:{port}", file=sys.stderr, flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(detector, config),
            log_level="info" if args.verbose else "warning",
            access_log=args.access_log,
            timeout_graceful_shutdown=args.graceful_timeout,
            lifespan="on",
        )
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return ExitCode.OK if server.started else ExitCode.FAILED


COMMAND = Command(
    "serve", "serve the detector over HTTP with dynamic batching (needs the [serve] extra)", _add_arguments, _run
)
