"""`python -m ai00ref serve`: config -> runtime -> aiohttp app, on [listen].ip:port (65530 by default)."""
from __future__ import annotations

import logging
import ssl
from pathlib import Path

from aiohttp import web

from ai00ref.loading import loading_bar
from ai00ref.server.app import make_app
from ai00ref.server.config import (ConfigError, default_config, load_config, resolve_config_paths,
                                   with_overrides)
from ai00ref.server.observability import JsonLogFormatter
from ai00ref.server.runtime import RUNTIME_STAGES, start_runtime

log = logging.getLogger("ai00ref.server")
DEFAULT_CONFIG = "assets/configs/Config.toml"
CERTS = "assets/certs"  # relative to the working directory, as Ai00


def read_config(path: str, ip: str | None, port: int | None):
    """The config file (the default path may be missing: then the defaults), CLI overrides, paths resolved."""
    if Path(path).exists() or path != DEFAULT_CONFIG:
        config = load_config(path)
    else:
        log.warning("%s not found: using the default configuration", path)
        config = default_config()
    return resolve_config_paths(with_overrides(config, ip=ip, port=port), Path.cwd())


def tls_context(listen, certs: Path) -> ssl.SSLContext | None:
    """HTTPS when `[listen].tls` is set or `domain` is not "local" (as Ai00), from `certs`/cert.pem and key.pem.
    ACME (Let's Encrypt) needs the internet and is not done here: with `acme = true` the certs must be in place."""
    if not (listen.tls or listen.acme or listen.domain != "local"):
        return None
    cert, key = certs / "cert.pem", certs / "key.pem"
    if not (cert.is_file() and key.is_file()):
        why = "acme = true, but ACME is not supported" if listen.acme else "TLS is on ([listen].tls or domain)"
        raise ConfigError(f"{why}: put cert.pem and key.pem (PEM) in {certs}")
    if listen.acme:
        log.warning("ACME is not supported: serving HTTPS with the certificate in %s", certs)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as error:
        raise ConfigError(f"{cert} and {key} do not make a certificate chain: {error}") from None
    return context


def setup_logging(log_format: str = "text") -> None:
    """INFO to stderr: plain lines, or one JSON object a line (`json`, with each request's fields)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter() if log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def serve(config_path: str = DEFAULT_CONFIG, ip: str | None = None, port: int | None = None,
          log_format: str = "text", progress: bool = True) -> int:
    setup_logging(log_format)
    config = read_config(config_path, ip, port)
    context = tls_context(config.listen, Path.cwd() / CERTS)
    try:
        with loading_bar(f"loading {config.model.name or 'the demo model'}", RUNTIME_STAGES, progress) as on_stage:
            runtime = start_runtime(config, on_stage=on_stage, warm_up=True)
    except (OSError, ValueError) as error:  # Ai00 stays up without a model; we too, and generation answers 503
        log.error("the model did not load: %s", error)
        runtime = None
    app = make_app(runtime, config, Path.cwd())
    log.info("listening on %s://%s:%d", "https" if context else "http", config.listen.ip, config.listen.port)
    web.run_app(app, host=config.listen.ip, port=config.listen.port, ssl_context=context, print=None,
                access_log=None)  # one line per request: ai00ref.access (observability.py) has the request id
    return 0


__all__ = ["serve", "read_config", "tls_context", "ConfigError"]
