"""`[api]`: the platform's HTTP API (/api/v1) on the operations listener (`[http]`).
Declared as in settings.py (whose TABLES lists it); kept apart so that settings.py does not
grow past reading length."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import checks
from gateway.config.declare import setting

MIB = 1024 * 1024


@dataclass(frozen=True)
class ApiConfig:
    """Who may call the API how often, and how large a request may be."""

    enabled: bool = setting(
        True,
        "Serve the API at /api/v1 on the operations listener (tokens from `gateway token "
        "create`); false: health and metrics only.",
    )
    rate_per_second: float = setting(
        20.0,
        "Requests a second each token may make on average (per node); over it, 429 with "
        "Retry-After.",
        check=checks.positive,
    )
    rate_burst: int = setting(
        60, "Requests a token may make at once before the rate applies.", low=1, high=100000
    )
    max_json_bytes: int = setting(
        1 * MIB, "Largest JSON request body; over it, 413.", low=1024, high=64 * MIB
    )
    max_upload_bytes: int = setting(
        50 * MIB,
        "Largest document upload (multipart); over it, 413. Uploads are streamed to disk, "
        "never held whole in memory.",
        low=1024,
        high=4096 * MIB,
    )
