"""Where an e-invoice is filed, by what it says: the rule file (gateway/routing/
einvoice_filing.toml, shipped with the package; an edited copy named by `einvoice.rules`
overrides it) and the small engine that reads it. Like the partner registry, the rules are
data: which journals are purchases and sales, and where the bare address files an invoice
by the company's role in it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.errors import GatewayError

DEFAULT_RULES = Path(__file__).resolve().parent / "einvoice_filing.toml"

Role = Literal["buyer", "seller"]


class RulesError(GatewayError):
    """The e-invoice filing rules are wrong; the message names the file and the key."""


@dataclass(frozen=True)
class Decision:
    """Where one e-invoice goes for one company, and what is noted about it."""

    journal: str | None  # None: the bare address's own folder ("A classer")
    note: str | None = None  # a journal mismatch, said where the firm reads it


@dataclass(frozen=True)
class EinvoiceFiling:
    purchases: frozenset[str]
    sales: frozenset[str]
    bare_buyer: str | None
    bare_seller: str | None
    trust_invoice: bool

    def decide(self, journal: str | None, role: Role | None) -> Decision:
        """`journal`: the address's (None: the bare company address); `role`: the company's
        in the invoice (None: neither party is the company, or it is not known)."""
        by_role = self.bare_buyer if role == "buyer" else self.bare_seller if role else None
        if journal is None:
            return Decision(by_role)
        note = None
        if role == "seller" and journal in self.purchases:
            note = (
                f"journal mismatch: the company is the seller of this invoice, "
                f"sent to a purchases address ({journal})"
            )
        elif role == "buyer" and journal in self.sales:
            note = (
                f"journal mismatch: the company is the buyer of this invoice, "
                f"sent to a sales address ({journal})"
            )
        if self.trust_invoice and by_role is not None:
            return Decision(by_role, note and f"{note}; filed by the invoice into {by_role}")
        return Decision(journal, note)


def load_rules(path: Path, journals: Iterable[str]) -> EinvoiceFiling:
    """Read and check the rule file against the configured journals. An edited copy must
    name configured journals only; the shipped file fits whatever journals are configured
    (one they lack is left out: an admin who renamed `achats` is not made to edit it)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RulesError(f"{path}: e-invoice filing rules not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{path}: not valid TOML: {exc}") from exc
    shipped = path.resolve() == DEFAULT_RULES
    return parse_rules(data, set(journals), str(path), strict=not shipped)


def parse_rules(
    data: Mapping[str, Any], journals: set[str], where: str, strict: bool = True
) -> EinvoiceFiling:
    _only(data, {"journals", "bare_address", "journal_address"}, where)
    kinds = _table(data, "journals", where)
    _only(kinds, {"purchases", "sales"}, f"{where}: journals")
    bare = _table(data, "bare_address", where)
    _only(bare, {"buyer", "seller"}, f"{where}: bare_address")
    trusted = _table(data, "journal_address", where)
    _only(trusted, {"trust_invoice"}, f"{where}: journal_address")

    def journal_list(key: str) -> frozenset[str]:
        value = kinds.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RulesError(f"{where}: journals.{key} must be a list of journal names")
        if strict:
            for name in value:
                _known(name, journals, f"{where}: journals.{key}")
        return frozenset(v.lower() for v in value if _is_journal(v, journals))

    def journal(key: str) -> str | None:
        value = bare.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise RulesError(f"{where}: bare_address.{key} must be a journal name")
        if strict:
            _known(value, journals, f"{where}: bare_address.{key}")
        return value.lower() if _is_journal(value, journals) else None

    trust = trusted.get("trust_invoice", False)
    if not isinstance(trust, bool):
        raise RulesError(f"{where}: journal_address.trust_invoice must be true or false")
    purchases, sales = journal_list("purchases"), journal_list("sales")
    if both := purchases & sales:
        raise RulesError(f"{where}: {', '.join(sorted(both))} cannot be purchases and sales")
    return EinvoiceFiling(purchases, sales, journal("buyer"), journal("seller"), trust)


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise RulesError(f"{where}: [{key}] must be a table")
    return value


def _only(table: Mapping[str, Any], known: set[str], where: str) -> None:
    if unknown := set(table) - known:
        raise RulesError(
            f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(known))})"
        )


def _is_journal(name: str, journals: set[str]) -> bool:
    return name.lower() in {j.lower() for j in journals}


def _known(name: str, journals: set[str], where: str) -> None:
    if not _is_journal(name, journals):
        raise RulesError(
            f"{where}: {name!r} is not a journal of filing.journals ({', '.join(sorted(journals))})"
        )
