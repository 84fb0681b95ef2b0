"""Gateway configuration: one TOML file, validated at start-up.

Every error names the key that is wrong and what would be right, so a mail admin can fix the
file without reading code. Relative paths in the file are relative to the file's folder.

Each setting is declared once, in `settings.py` (default, bounds, check, help text, with the
machinery in `declare.py`); `parse.py` reads the file through those declarations and
`render.py` turns them into `gateway init`'s commented TOML and the README's table.
"""

from gateway.config.checks import DEFAULT_JOURNALS
from gateway.config.declare import ConfigError
from gateway.config.einvoice import EinvoiceConfig
from gateway.config.imap_oauth import ImapOAuth2Config
from gateway.config.parse import (
    CONFIG_ENV,
    DEFAULT_CONFIG_NAME,
    load_config,
    parse_config,
    resolve_config_path,
)
from gateway.config.render import default_toml, settings_table
from gateway.config.settings import (
    DEFAULT_PARTNER_REGISTRY,
    LOOPBACK_HOSTS,
    TABLES,
    ExtractionConfig,
    FilingConfig,
    GatewayConfig,
    HttpConfig,
    ImapSourceConfig,
    ImapTls,
    LoggingConfig,
    OutboundConfig,
    SenderPolicyConfig,
    SmarthostConfig,
    SmtpConfig,
)
from gateway.config.storage import S3Config
from gateway.config.trust import ClamavConfig, RspamdConfig, TrustConfig
from gateway.config.webhooks import WebhookConfig, address_refusal

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_JOURNALS",
    "DEFAULT_PARTNER_REGISTRY",
    "LOOPBACK_HOSTS",
    "TABLES",
    "ClamavConfig",
    "ConfigError",
    "EinvoiceConfig",
    "ExtractionConfig",
    "FilingConfig",
    "GatewayConfig",
    "HttpConfig",
    "ImapOAuth2Config",
    "ImapSourceConfig",
    "ImapTls",
    "LoggingConfig",
    "OutboundConfig",
    "RspamdConfig",
    "S3Config",
    "SenderPolicyConfig",
    "SmarthostConfig",
    "SmtpConfig",
    "TrustConfig",
    "WebhookConfig",
    "address_refusal",
    "default_toml",
    "load_config",
    "parse_config",
    "resolve_config_path",
    "settings_table",
]
