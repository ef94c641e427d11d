"""`python -m service`: serve the models with uvicorn, configured by RNNSERVE_* variables."""

from __future__ import annotations

import sys

import uvicorn
from pydantic import ValidationError

from service.app import create_app
from service.config import Settings
from service.logs import configure_logging


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "\n".join(
            f"  RNNSERVE_{'__'.join(map(str, e['loc'])).upper() or '(settings)'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        sys.exit(f"invalid configuration:\n{problems}")
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # RequestContextMiddleware logs each request, with its id
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )


if __name__ == "__main__":
    main()
