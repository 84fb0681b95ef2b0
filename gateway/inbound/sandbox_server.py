"""Imported first by the extraction sandbox's fork server (`set_forkserver_preload`), and by
nothing else: the fork server then dies with the filing worker that started it, and with it
(`die_with_parent` in each child) the child that may be deep in a parse. Without this, the
fork server outlives a SIGKILLed worker, with parent 1, and so does the child it forked.
"""

import signal

from gateway.lifetime import die_with_parent

die_with_parent(signal.SIGKILL)
