"""The ObjectStore on an S3-compatible server (MinIO, Garage, Ceph, Scaleway, OVH, AWS…).

The client is `minio` (the MinIO Python SDK), chosen by measurement
(`benchmarks/s3_clients.py`, against `rclone serve s3` on loopback, 20 KB objects; two runs):
minio did 1.6-2.3x boto3's PUTs a second (serial), 1.8-1.9x its GETs, 2x its ranged GETs,
and ~2x both from 4 threads; it streamed 50 MB up and down with the least peak memory
(+40 MB against boto3's +54-62 MB; boto3 uploads the parts faster, from 10 threads). Its
errors carry the S3 error code, which `check()` needs to tell bad credentials from a missing
bucket. obstore was the fastest (GETs 3x minio) and lightest to import, but its ranged GET
fails against rclone ("non-partial response") and its errors do not expose the S3 code.
boto3 (1.36+) also fails ranged GETs against rclone until its checksum validation is turned
off, and is the slowest of the three here. minio's one quirk: it reads the error code only
from an `application/xml` body, and rclone says `text/xml`, so `_answer` reads both.

Requests go through a urllib3 pool built here: bounded connect and read timeouts
(`timeout_seconds`) and a few retries (connection errors, timeouts, 5xx, for the methods
that may be repeated), so a dead endpoint costs a bounded time, then ObjectStoreUnavailable.
Every failure is one of the three kinds of `objects.py`: nothing of minio or urllib3 leaks.
One `S3Objects` is shared by every thread (minio and urllib3's pool are thread-safe).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import BinaryIO, NoReturn, Protocol
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from gateway.storage.objects import (
    ObjectMissing,
    ObjectStoreError,
    ObjectStoreMisconfigured,
    ObjectStoreUnavailable,
)

MIB = 1024 * 1024
# Above this a file goes up in parts of this size (S3's smallest part is 5 MiB); one part at
# a time, so an upload holds one part in memory whatever the file's size.
PART_SIZE = 8 * MIB
RETRIES = 2  # after the first try: three attempts in all
PROBE_KEY = ".gateway-check"  # what check() reads; absent is the normal answer

CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AuthorizationHeaderMalformed",
        "InvalidToken",
        "ExpiredToken",
        "InvalidSecurity",
    }
)
BUSY_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed"}
)
MISSING_KEY_CODES = frozenset({"NoSuchKey", "InvalidRange"})


class S3Settings(Protocol):
    """What S3Objects is built from: `[storage.s3]` (gateway/config/storage.py, S3Config)."""

    @property
    def endpoint(self) -> str: ...
    @property
    def bucket(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def path_style(self) -> bool: ...
    @property
    def timeout_seconds(self) -> int: ...
    def credentials(self) -> tuple[str, str]:
        """(access key id, secret access key), read now."""
        ...


class S3Objects:
    """Objects under `prefix` in one bucket of an S3-compatible server."""

    def __init__(
        self,
        *,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        prefix: str = "",
        path_style: bool = True,
        timeout_seconds: float = 10.0,
        retries: int = RETRIES,
        part_size: int = PART_SIZE,
    ) -> None:
        parts = urlsplit(endpoint)
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = max(part_size, 5 * MIB)
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout_seconds, read=timeout_seconds),
            retries=urllib3.Retry(
                total=retries,
                backoff_factor=0.2,
                status_forcelist=(500, 502, 503, 504),
                # The last 5xx comes back as a response, so its S3 code (SlowDown) is read.
                raise_on_status=False,
            ),
            maxsize=16,  # connections kept per host: more threads than this wait for none
        )
        self._client = Minio(
            parts.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=parts.scheme == "https",
            region=region,  # given, minio never asks the server for the bucket's location
            http_client=http,
        )
        # minio's own choice is virtual-hosted for AWS hosts only; the setting decides.
        if path_style:
            self._client.disable_virtual_style_endpoint()  # type: ignore[no-untyped-call]
        else:
            self._client.enable_virtual_style_endpoint()  # type: ignore[no-untyped-call]

    @classmethod
    def from_config(cls, config: S3Settings) -> S3Objects:
        """Reads the credentials now: a ConfigError naming the setting when they are missing."""
        access_key, secret_key = config.credentials()
        return cls(
            endpoint=config.endpoint,
            bucket=config.bucket,
            access_key=access_key,
            secret_key=secret_key,
            region=config.region,
            prefix=config.prefix,
            path_style=config.path_style,
            timeout_seconds=config.timeout_seconds,
        )

    # -- the ObjectStore ---------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        try:
            self._client.put_object(
                self.bucket, self._name(key), io.BytesIO(data), len(data), part_size=self.part_size
            )
        except Exception as exc:
            self._fail(exc, key)

    def put_file(self, key: str, file: BinaryIO, size: int) -> None:
        try:
            self._client.put_object(
                self.bucket,
                self._name(key),
                file,
                size,
                part_size=self.part_size,
                num_parallel_uploads=1,
            )
        except Exception as exc:
            self._fail(exc, key)

    def get(self, key: str) -> bytes:
        return self._read(key)

    def get_range(self, key: str, offset: int, size: int) -> bytes:
        if size <= 0:
            return b""
        data = self._read(key, offset, size)
        if len(data) != size:
            raise ObjectMissing(
                f"{self.describe(key)}: {size} bytes asked at offset {offset}, {len(data)} there"
            )
        return data

    def _read(self, key: str, offset: int = 0, length: int = 0) -> bytes:
        """One GET, whole (`length` 0) or ranged, read and its connection given back."""
        try:
            response = self._client.get_object(
                self.bucket, self._name(key), offset=offset, length=length
            )
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()
        except Exception as exc:
            self._fail(exc, key)

    def stream(self, key: str, chunk_size: int) -> Iterator[bytes]:
        """Asks at once (a missing key fails here, not at the first chunk), then reads."""
        try:
            response = self._client.get_object(self.bucket, self._name(key))
        except Exception as exc:
            self._fail(exc, key)
        return self._chunks(response, key, chunk_size)

    def _chunks(
        self, response: urllib3.BaseHTTPResponse, key: str, chunk_size: int
    ) -> Iterator[bytes]:
        try:
            yield from response.stream(chunk_size)
        except Exception as exc:
            self._fail(exc, key)
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        try:
            self._client.stat_object(self.bucket, self._name(key))
        except S3Error as exc:
            if exc.code == "NoSuchKey":  # a HEAD has no body: a missing bucket says so too
                return False
            self._fail(exc, key)
        except Exception as exc:
            self._fail(exc, key)
        return True

    def delete(self, key: str) -> None:
        try:
            self._client.remove_object(self.bucket, self._name(key))
        except S3Error as exc:
            if exc.code != "NoSuchKey":
                self._fail(exc, key)
        except Exception as exc:
            self._fail(exc, key)

    def check(self) -> None:
        """Reads a key that is not there: NoSuchKey proves the endpoint answers, the
        credentials sign and the bucket exists (a GET, not a HEAD: its error has a body that
        tells a bad signature from a refusal)."""
        try:
            self.get(PROBE_KEY)
        except ObjectMissing:
            return

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._name(key)}"

    # -- failures ----------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        return self.prefix + key

    @property
    def _where(self) -> str:
        return f"S3 endpoint {self.endpoint}, bucket {self.bucket!r}"

    def _fail(self, exc: Exception, key: str) -> NoReturn:
        """Raise the ObjectStoreError that `exc` amounts to, saying what to do."""
        if isinstance(exc, ObjectStoreError):
            raise exc
        answer = _answer(exc)
        if answer is None:
            if isinstance(exc, urllib3.exceptions.HTTPError | OSError | MinioException):
                reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
                raise ObjectStoreUnavailable(
                    f"{self._where}: unreachable ({_reason(reason)}); try again later"
                ) from exc
            raise exc
        code, status, message = answer
        if code in MISSING_KEY_CODES:
            raise ObjectMissing(f"{self.describe(key)}: no such object") from exc
        if code == "NoSuchBucket":
            raise ObjectStoreMisconfigured(
                f"{self._where}: no such bucket (create it, or fix storage.s3.bucket)"
            ) from exc
        if code in CREDENTIAL_CODES:
            raise ObjectStoreMisconfigured(
                f"{self._where}: wrong credentials ({code}): check the keys named by "
                "storage.s3.access_key_id_env / secret_access_key_env or credentials_file"
            ) from exc
        if code in BUSY_CODES or status >= 500 or status == 0:
            raise ObjectStoreUnavailable(
                f"{self._where}: the server is busy or failing ({code or status or '?'}); "
                "try again later"
            ) from exc
        raise ObjectStoreMisconfigured(
            f"{self._where}: refused {self.describe(key)} ({code or f'HTTP {status}'}"
            f"{': ' + message if message else ''}): check the keys' permissions on the bucket"
        ) from exc


_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_MESSAGE = re.compile(r"<Message>([^<]{1,300})</Message>")


def _answer(exc: Exception) -> tuple[str, int, str] | None:
    """(S3 error code, HTTP status, message) of an error the server answered; None when it
    did not answer. minio reads the code from an `application/xml` body only: a server that
    says `text/xml` (rclone) comes as InvalidResponseError, whose body holds the same XML."""
    if isinstance(exc, S3Error):
        status = exc.response.status if exc.response is not None else 0
        return exc.code or "", status, exc.message or ""
    if isinstance(exc, ServerError):
        return "", exc.status_code, ""
    if isinstance(exc, InvalidResponseError):
        status = getattr(exc, "_code", 0)
        body = getattr(exc, "_body", None) or ""
        code, message = _CODE.search(body), _MESSAGE.search(body)
        return (
            code[1] if code else "",
            status if isinstance(status, int) else 0,
            message[1] if message else "",
        )
    return None


def _reason(exc: object) -> str:
    """One line: 'connection refused', 'timed out', 'name not resolved'…"""
    text = str(exc)
    for needle, said in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Name or service not known", "host name not resolved"),
        ("nodename nor servname", "host name not resolved"),
        ("Temporary failure in name resolution", "host name not resolved"),
        ("Connection reset", "connection reset"),
    ):
        if needle in text:
            return said
    return text.splitlines()[0] if text else type(exc).__name__
