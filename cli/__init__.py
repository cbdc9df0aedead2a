"""vlmq's entry points, on top of every other part: the `vlmq` command (commands.py), the launcher
that runs the whole service (launcher.py), the embedded Redis it brings (redis_server.py) and the
run state that lets the commands find a running stack (runstate.py).

Nothing imports this package but its users: the `vlmq` script (`vlmq.cli:app`) and `python -m vlmq.cli`.
"""

from vlmq.cli.commands import app

__all__ = ["app"]
