"""`python -m service`: serve the models with uvicorn, configured by RNNSERVE_* variables."""

from __future__ import annotations

import sys

from pydantic import ValidationError

from service.config import Settings
from service.logs import configure_logging
from service.server import serve


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
    serve(settings)


if __name__ == "__main__":
    main()
