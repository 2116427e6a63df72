"""`python -m ai00ref serve`: config -> runtime -> aiohttp app, on [listen].ip:port (65530 by default)."""
from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from ai00ref.server.app import make_app
from ai00ref.server.config import (ConfigError, default_config, load_config, resolve_config_paths,
                                   with_overrides)
from ai00ref.server.runtime import start_runtime

log = logging.getLogger("ai00ref.server")
DEFAULT_CONFIG = "assets/configs/Config.toml"


def read_config(path: str, ip: str | None, port: int | None):
    """The config file (the default path may be missing: then the defaults), CLI overrides, paths resolved."""
    if Path(path).exists() or path != DEFAULT_CONFIG:
        config = load_config(path)
    else:
        log.warning("%s not found: using the default configuration", path)
        config = default_config()
    return resolve_config_paths(with_overrides(config, ip=ip, port=port), Path.cwd())


def serve(config_path: str = DEFAULT_CONFIG, ip: str | None = None, port: int | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = read_config(config_path, ip, port)
    try:
        runtime = start_runtime(config)
    except (OSError, ValueError) as error:  # Ai00 stays up without a model; we too, and generation answers 503
        log.error("the model did not load: %s", error)
        runtime = None
    app = make_app(runtime, config, Path.cwd())
    web.run_app(app, host=config.listen.ip, port=config.listen.port, print=None)
    return 0


__all__ = ["serve", "read_config", "ConfigError"]
