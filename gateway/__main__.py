"""`python -m gateway`: how `serve` starts its workers.

A worker asks to die with its serve before anything else — before the CLI's imports, which
take seconds on a loaded machine: a serve killed meanwhile would otherwise leave it running
them to the end, with nothing yet to make it stop (`gateway.lifetime`).
"""

from gateway.lifetime import follow_supervisor

follow_supervisor()

from gateway.cli import main  # noqa: E402  (after the line above, on purpose)

main()
