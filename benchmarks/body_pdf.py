"""Body to PDF benchmark (issue 12's closing figure): the time to render one typical HTML
receipt (a ride receipt: styled table, a `cid:` logo, a remote tracking pixel that is not
fetched) as PDF, through the sandbox child the filing worker uses (the pipe both ways
included), one message after another; the child's start-up (WeasyPrint's imports and
Fontconfig, once per worker) is reported apart.

    .venv/bin/python benchmarks/body_pdf.py [--messages 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from email.message import EmailMessage
from pathlib import Path

from gateway.inbound.body_pdf import BodyPdfRenderer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: tests.* is reached from the repo root

from tests.corpus.make_corpus import png_bytes  # noqa: E402

RECEIPT = """<!DOCTYPE html><html><head><style>
body {{ font-family: Helvetica, Arial, sans-serif; color: #222; }}
table {{ width: 100%; border-collapse: collapse; }}
td {{ padding: 6px; border-bottom: 1px solid #ddd; }}
.total td {{ font-weight: bold; font-size: 14pt; }}
</style></head><body>
<img src="cid:logo@rides.example" width="120" alt="Rides">
<img src="https://tracking.rides.example/open.gif?u=42" width="1" height="1">
<h1>Merci pour votre course, Jeanne</h1>
<p>Mardi 17 mars 2026, 08:42 — Paris 11e → Gare de Lyon</p>
<table>{rows}
<tr class="total"><td>Total TTC</td><td>{total} €</td></tr></table>
<p>TVA 10 % incluse. Reçu n° 7F3K-2026-{n:04d}. Rides France SAS, 12 rue de la Paix, Paris.</p>
</body></html>"""


def receipt(n: int) -> bytes:
    rows = "".join(
        f"<tr><td>{label}</td><td>{amount:.2f} €</td></tr>"
        for label, amount in [("Course", 18.4 + n % 7), ("Service", 1.6), ("Pourboire", 2)]
    )
    msg = EmailMessage()
    msg["From"] = "Rides <receipts@rides.example>"
    msg["To"] = "compta+dupont-maconnerie@welyb.fr"
    msg["Subject"] = f"Votre reçu du 17 mars ({n})"
    msg.set_content("Votre reçu est en HTML.\n")
    msg.add_alternative(RECEIPT.format(rows=rows, total=f"{22 + n % 7:.2f}", n=n), subtype="html")
    [html] = [p for p in msg.iter_parts() if p.get_content_subtype() == "html"]
    html.add_related(png_bytes(120, 40), "image", "png", cid="<logo@rides.example>")
    return msg.as_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50)
    args = parser.parse_args()
    renderer = BodyPdfRenderer(timeout_seconds=60, memory_limit_mb=1024)
    try:
        started = time.perf_counter()
        renderer.render(receipt(0))  # the child starts here
        first = time.perf_counter() - started
        seconds = []
        size = 0
        for n in range(1, args.messages + 1):
            raw = receipt(n)
            started = time.perf_counter()
            size = len(renderer.render(raw))
            seconds.append(time.perf_counter() - started)
    finally:
        renderer.close()
    seconds.sort()
    p95 = seconds[min(len(seconds) - 1, round(0.95 * len(seconds)) - 1)]
    print(f"child start + first receipt: {first * 1000:.0f} ms")
    print(
        f"{len(seconds)} receipts ({len(receipt(1)) // 1024} KB each, PDF {size // 1024} KB): "
        f"median {statistics.median(seconds) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"max {seconds[-1] * 1000:.0f} ms per message"
    )


if __name__ == "__main__":
    main()
