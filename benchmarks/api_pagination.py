"""Pagination benchmark: a company's documents a page at a time, with a million stored.

Creates its own PostgreSQL database beside $GATEWAY_TEST_POSTGRES_URL's (dropped at the
end), migrates it, and generates N documents in a few INSERT … SELECT generate_series: two
cabinets, five companies (one holding 90%), a folder tree of ~30 folders for the big one,
media types 70% PDF / 20% JPEG / 10% other, placed over three years (to the minute, so
ties are broken by id). Then times, for each case, the first page and a page deep in
(the cursor of the row half-way through what the case matches):
  - gateway: `list_documents_page` (SQLAlchemy, joins for the row's company, folder,
    message), as the HTTP API calls it;
  - baseline: the plain indexed keyset query on `documents` alone through psycopg.
Prints median and p95 (ms) of each and the ratio gateway/baseline; target: each page of
the gateway under 50 ms. A case over target gets its EXPLAIN ANALYZE printed.

    .venv/bin/python benchmarks/api_pagination.py [--documents 1000000] [--repeat 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import create_engine, event, make_url, text

from gateway.storage.db import Database
from gateway.storage.listings.documents import encode_cursor, list_documents_page
from gateway.storage.tenancy import Tenant

TARGET_MS = 50.0
LIMIT = 50
BASE = "postgresql+psycopg://postgres@127.0.0.1:5432/gateway_test"
MONTHS = [f"{m:02d}" for m in range(1, 13)]
BIG_FOLDERS = (
    ["Achats", "Achats/2025", "Achats/2026"]
    + [f"Achats/{y}/{m}" for y in ("2025", "2026") for m in MONTHS]
    + ["Ventes", "Ventes/2026", "Banque", "Banque/Relevés", "Social", "A classer"]
)


@contextmanager
def own_database(base: str) -> Iterator[str]:
    url = make_url(base)
    name = f"gateway_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def generate(conn: psycopg.Connection[Any], documents: int) -> dict[str, Any]:
    """Cabinets, companies, folders and `documents` documents; returns the ids the cases use."""
    x = conn.execute
    x(
        "INSERT INTO cabinets (slug, name, created_at, forward_bot_mail) VALUES "
        "('aec', 'AEC', now(), false), ('other', 'Other', now(), false)"
    )
    x(
        "INSERT INTO companies (slug, cabinet_id, name, fiscal_year_end, created_at) "
        "SELECT s, CASE WHEN s = 'autre' THEN 2 ELSE 1 END, s, '12-31', now() "
        "FROM unnest(ARRAY['big', 'petite-a', 'petite-b', 'petite-c', 'autre']) AS s"
    )
    companies = dict(x("SELECT slug, id FROM companies").fetchall())
    for slug, company_id in companies.items():
        paths = BIG_FOLDERS if slug == "big" else ["A classer", "Achats"]
        for path in paths:  # parents first: BIG_FOLDERS is in that order
            parent = path.rsplit("/", 1)[0] if "/" in path else None
            x(
                "INSERT INTO folders (company_id, parent_id, name, path, created_at) "
                "VALUES (%s, (SELECT id FROM folders WHERE company_id = %s AND path = %s), "
                "%s, %s, now())",
                (company_id, company_id, parent, path.rsplit("/", 1)[-1], path),
            )
    big = companies["big"]
    big_folders = [
        r[0] for r in x("SELECT id FROM folders WHERE company_id = %s ORDER BY id", (big,))
    ]
    share = {"big": 0.9, "petite-a": 0.03, "petite-b": 0.03, "petite-c": 0.02, "autre": 0.02}
    start = 0
    for slug, fraction in share.items():
        count = int(documents * fraction)
        folders = (
            big_folders
            if slug == "big"
            else [
                r[0] for r in x("SELECT id FROM folders WHERE company_id = %s", (companies[slug],))
            ]
        )
        x(
            """
            INSERT INTO documents (company_id, folder_id, filename, media_type, size, sha256,
                                   source, source_mailbox, origin, placed_at)
            SELECT %(company)s,
                   (%(folders)s::int[])[1 + (g * 7919) %% cardinality(%(folders)s::int[])],
                   'facture-' || g || CASE WHEN g %% 10 < 7 THEN '.pdf' ELSE '.jpg' END,
                   CASE WHEN g %% 10 < 7 THEN 'application/pdf'
                        WHEN g %% 10 < 9 THEN 'image/jpeg'
                        ELSE 'application/xml' END,
                   20000 + (g * 131) %% 500000,
                   md5(g::text) || md5((g + 1)::text),
                   (ARRAY['smtp', 'imap', 'upload'])[1 + g %% 3], NULL, 'attachment',
                   date_trunc('minute', timestamptz '2024-01-01 08:00+00'
                       + (g - %(start)s) * (interval '3 years' / %(count)s)
                       + (random() * interval '1 hour'))
            FROM generate_series(%(start)s::bigint, %(start)s + %(count)s - 1) AS g
            """,
            {"company": companies[slug], "folders": folders, "start": start, "count": count},
        )
        start += count
    x("ANALYZE")
    conn.commit()
    folder_ids = dict(x("SELECT path, id FROM folders WHERE company_id = %s", (big,)).fetchall())
    return {"big": big, "folders": folder_ids}


def timed(call: Callable[[], object], repeat: int) -> list[float]:
    call()  # warm: plans, caches
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1000)
    return times


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.95) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--url", default=os.environ.get("GATEWAY_TEST_POSTGRES_URL", BASE))
    args = parser.parse_args()
    with own_database(args.url) as url:
        db = Database(url)
        db.migrate()
        raw_url = make_url(url).set(drivername="postgresql").render_as_string(False)
        with psycopg.connect(raw_url) as conn:
            t = time.perf_counter()
            ids = generate(conn, args.documents)
            print(f"generated {args.documents:,} documents in {time.perf_counter() - t:.1f} s")
            run_cases(db, conn, ids, args.repeat)
        db.dispose()


def run_cases(
    db: Database, conn: psycopg.Connection[Any], ids: dict[str, Any], repeat: int
) -> None:
    big, folders = ids["big"], ids["folders"]
    achats = [i for p, i in folders.items() if p == "Achats" or p.startswith("Achats/")]
    cases: list[tuple[str, dict[str, Any], str, list[Any]]] = [
        ("company", {}, "", []),
        (
            "company, folder subtree (Achats, 27 folders)",
            {"folder": "Achats"},
            " AND folder_id = ANY(%s)",
            [achats],
        ),
        (
            "company, one folder (Banque/Relevés)",
            {"folder": "Banque/Relevés"},
            " AND folder_id = %s",
            [folders["Banque/Relevés"]],
        ),
        (
            "company, media type image/jpeg",
            {"media_type": "image/jpeg"},
            " AND media_type = %s",
            ["image/jpeg"],
        ),
        (
            "company, subtree + xml",
            {"folder": "Achats", "media_type": "application/xml"},
            " AND folder_id = ANY(%s) AND media_type = %s",
            [achats, "application/xml"],
        ),
    ]
    statements: list[tuple[str, Any]] = []
    event.listen(
        db.engine,
        "before_cursor_execute",
        lambda _c, _cur, st, params, _ctx, _many: statements.append((st, params)),
    )
    tenant = Tenant(1)  # the big company's cabinet, as a cabinet-scoped token would
    print(f"{'case':52} {'page':6} {'gateway ms':>16} {'baseline ms':>16} {'ratio':>6}")
    slow = False
    for name, filters, where, params in cases:
        base_sql = f"FROM documents WHERE company_id = %s{where}"
        total = conn.execute(f"SELECT count(*) {base_sql}", [big, *params]).fetchone()[0]  # type: ignore[index]
        half = conn.execute(
            f"SELECT placed_at, id {base_sql} ORDER BY placed_at, id OFFSET %s LIMIT 1",
            [big, *params, total // 2],
        ).fetchone()
        assert half is not None
        for page, position in (("first", None), ("deep", half)):
            cursor = encode_cursor(*position) if position else None

            def gateway(cursor: str | None = cursor, filters: dict[str, Any] = filters) -> object:
                p = list_documents_page(
                    db, tenant, company="big", limit=LIMIT, after=cursor, **filters
                )
                assert len(p.items) == LIMIT
                return p

            keyset = " AND (placed_at, id) > (%s, %s)" if position else ""
            sql = f"SELECT * {base_sql}{keyset} ORDER BY placed_at, id LIMIT {LIMIT}"
            values = [big, *params, *(position or ())]

            def baseline(sql: str = sql, values: list[Any] = values) -> object:
                return conn.execute(sql, values).fetchall()

            g, b = timed(gateway, repeat), timed(baseline, repeat)
            gm, bm = statistics.median(g), statistics.median(b)
            print(
                f"{name + f' ({total:,})':52} {page:6} {gm:7.2f} / {p95(g):6.2f} "
                f"{bm:7.2f} / {p95(b):6.2f} {gm / bm:6.1f}"
            )
            if gm > TARGET_MS:
                slow = True
                statements.clear()
                gateway()
                st, prm = statements[-1]
                with db.engine.connect() as c:
                    plan = c.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + st, prm).fetchall()
                print("\n".join("    " + r[0] for r in plan))
    print(
        f"(median / p95 of {repeat} runs; target: every gateway page under {TARGET_MS:.0f} ms)"
        + (" -- SOME PAGES ARE SLOW" if slow else " -- met")
    )


if __name__ == "__main__":
    main()
