"""/status: the queues and the processes, as `gateway status` shows them (admin tokens)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from gateway.http.api.access import Admin, Gw
from gateway.http.api.schemas import Moment, refusals
from gateway.storage.listings.queues import queue_summaries, registered_processes

router = APIRouter()


class Queue(BaseModel):
    queue: str
    states: dict[str, int]
    waiting: int
    oldest_waiting_at: Moment | None


class Process(BaseModel):
    name: str
    node: str
    role: str
    pid: int
    started_at: Moment
    heartbeat_at: Moment
    alive: bool


class Status(BaseModel):
    queues: list[Queue]
    processes: list[Process]


@router.get("/status", tags=["status"], responses=refusals())
def status(who: Admin, gw: Gw) -> Status:
    """Each queue's items by state and its oldest waiting item; the registered processes."""
    now = gw.clock.now()
    return Status(
        queues=[Queue.model_validate(q, from_attributes=True) for q in queue_summaries(gw.db)],
        processes=[
            Process.model_validate(p, from_attributes=True)
            for p in registered_processes(gw.db, now)
        ],
    )
