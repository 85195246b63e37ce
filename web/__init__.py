"""``csm serve``: the archive in a browser, a separate process that is a client of csmd's control socket.

Imported only by ``csm serve`` (the CLI loads it lazily), so ``csm status`` never pays for the web stack.
"""
