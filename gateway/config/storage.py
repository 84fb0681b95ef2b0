"""`[storage.s3]`: documents and raw mail in S3-compatible object storage (issue 14), used
when `storage.backend = "s3"`. Declared as in settings.py (whose TABLES lists it); kept
apart so that settings.py does not grow past reading length.

The keys themselves are never written in the TOML: they are read at use, from two
environment variables or an AWS shared-credentials file, so a rotated secret is picked up
without editing the file, and a missing one is an error that names the setting.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gateway.config.declare import ConfigError, Invalid, in_folder, required, setting

WHERE = "storage.s3"


def endpoint_url(value: str) -> str:
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid(
            f"an http:// or https:// URL, e.g. 'https://s3.fr-par.scw.cloud'; got {value!r}"
        )
    if parts.path or parts.query:
        raise Invalid(f"the server's URL only (the bucket is `bucket`); got {value!r}")
    return url


def bucket_name(value: str) -> str:
    name = value.strip()
    if not (3 <= len(name) <= 63) or not all(c.islower() or c.isdigit() or c in ".-" for c in name):
        raise Invalid(f"3 to 63 lower-case letters, digits, dots and hyphens; got {value!r}")
    return name


def key_prefix(value: str) -> str:
    """'' or 'a/b/' (one trailing slash), so that prefix + key is always a clean path."""
    prefix = value.strip().strip("/")
    return f"{prefix}/" if prefix else ""


@dataclass(frozen=True)
class S3Config:
    endpoint: str = required(
        "The S3 server's URL (path-style servers: MinIO, Garage, Ceph, Scaleway, OVH…).",
        missing='required when storage.backend = "s3"',
        example="https://s3.fr-par.scw.cloud",
        check=endpoint_url,
    )
    bucket: str = required(
        "The bucket; it must exist (the gateway does not create it).",
        missing='required when storage.backend = "s3"',
        example="welyb-gateway",
        check=bucket_name,
    )
    region: str = setting("us-east-1", "Region the requests are signed for.")
    prefix: str = setting(
        "", "Prefix of every key, to share a bucket (e.g. 'prod/').", check=key_prefix
    )
    path_style: bool = setting(
        True,
        "Path-style URLs (endpoint/bucket/key), which most servers other than AWS want; "
        "false: virtual-hosted (bucket.endpoint/key).",
    )
    access_key_id_env: str = setting(
        "AWS_ACCESS_KEY_ID", "Environment variable holding the access key id."
    )
    secret_access_key_env: str = setting(
        "AWS_SECRET_ACCESS_KEY", "Environment variable holding the secret access key."
    )
    credentials_file: Path | None = setting(
        None,
        "AWS shared-credentials file (INI) to read the keys from instead, at each start.",
        resolve=in_folder,
        default_text="unset (the environment variables)",
        example="/run/secrets/s3-credentials",
    )
    profile: str = setting("default", "The section of credentials_file holding the keys.")
    timeout_seconds: int = setting(
        10,
        "Seconds to connect, and to wait for each read; a request that times out is "
        "retried twice, then the store is unavailable (SMTP answers 4xx).",
        low=1,
        high=600,
    )

    def credentials(self) -> tuple[str, str]:
        """(access key id, secret access key), read now; a ConfigError naming the setting
        when they are missing."""
        if self.credentials_file is not None:
            return self._from_file(self.credentials_file)
        found = []
        for setting_name, variable in (
            ("access_key_id_env", self.access_key_id_env),
            ("secret_access_key_env", self.secret_access_key_env),
        ):
            value = os.environ.get(variable, "").strip()
            if not value:
                raise ConfigError(
                    f"{WHERE}.{setting_name}: the environment variable {variable} is not set "
                    "(export it before starting the gateway, or set credentials_file)"
                )
            found.append(value)
        return found[0], found[1]

    def _from_file(self, path: Path) -> tuple[str, str]:
        where = f"{WHERE}.credentials_file ({path})"
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with path.open(encoding="utf-8") as f:
                parser.read_file(f)
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read it: {exc.strerror or exc}") from exc
        except configparser.Error as exc:
            raise ConfigError(f"{where}: not an AWS credentials file: {exc}") from exc
        if not parser.has_section(self.profile):
            raise ConfigError(
                f"{where}: no [{self.profile}] section (storage.s3.profile); found "
                f"{', '.join(parser.sections()) or 'none'}"
            )
        section = parser[self.profile]
        values = []
        for key in ("aws_access_key_id", "aws_secret_access_key"):
            value = section.get(key, "").strip()
            if not value:
                raise ConfigError(f"{where}: [{self.profile}] has no {key}")
            values.append(value)
        return values[0], values[1]
