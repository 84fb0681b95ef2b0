"""A company's folder tree (the GED). Paths are `/`-separated names from the root."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.storage.accounts import AccountError
from gateway.storage.db import upsert_insert
from gateway.storage.models import Folder


class FolderPathError(AccountError):
    """A folder path that cannot be stored; the message says why (the field: `folder`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="folder")


def normalise_path(path: str) -> str:
    parts = [p.strip() for p in path.replace("\\", "/").split("/")]
    parts = [p for p in parts if p]
    if not parts:
        raise FolderPathError("the folder path is empty")
    for p in parts:
        if p in (".", "..") or any(ord(c) < 32 for c in p) or len(p) > 255:
            raise FolderPathError(f"folder name {p!r} is not allowed")
    return "/".join(parts)


def ensure_folder(session: Session, company_id: int, path: str, now: datetime) -> int:
    """The id of the folder at `path`, creating it and any missing parents (R3).

    Insert-or-ignore, then read: two filers creating the same folder at once both succeed.
    """
    path = normalise_path(path)
    parent_id: int | None = None
    names = path.split("/")
    insert = upsert_insert(session)
    for depth in range(1, len(names) + 1):
        sub = "/".join(names[:depth])
        folder_id = session.execute(
            select(Folder.id).where(Folder.company_id == company_id, Folder.path == sub)
        ).scalar_one_or_none()
        if folder_id is None:
            session.execute(
                insert(Folder)
                .values(
                    company_id=company_id,
                    parent_id=parent_id,
                    name=names[depth - 1],
                    path=sub,
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["company_id", "path"])
            )
            folder_id = session.execute(
                select(Folder.id).where(Folder.company_id == company_id, Folder.path == sub)
            ).scalar_one()
        parent_id = folder_id
    assert parent_id is not None
    return parent_id
