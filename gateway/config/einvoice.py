"""`[einvoice]`: reading e-invoices at filing (issue 15). Declared as in settings.py (whose
TABLES lists it); kept apart so that settings.py does not grow past reading length."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.config.declare import in_folder, setting
from gateway.routing.einvoice_filing import DEFAULT_RULES

WHERE = "einvoice"


@dataclass(frozen=True)
class EinvoiceConfig:
    enabled: bool = setting(
        True,
        "Read e-invoices (Factur-X PDFs, UBL and CII XML) at filing: their fields are kept "
        "with the document, checked against the company, used to file them (see `rules`) "
        "and to file the same invoice once per company.",
    )
    # Real Factur-X XML is tens of KB; an EXTENDED invoice of thousands of lines a few MB.
    max_xml_bytes: int = setting(
        8 * 1024 * 1024,
        "An e-invoice's XML (standalone or embedded in a PDF) bigger than this is not read "
        "(the document is filed, with the reason).",
        low=64 * 1024,
        high=1024 * 1024 * 1024,
        unit="bytes",
    )
    rules: Path = setting(
        DEFAULT_RULES,
        "Where e-invoices are filed by what they say (purchases and sales journals, the bare "
        "address's choice, whether journal addresses trust the invoice).",
        resolve=in_folder,
        default_text="the rules shipped with the gateway (gateway/routing/einvoice_filing.toml)",
        example="/etc/gateway/einvoice_filing.toml",
    )
