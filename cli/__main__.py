"""`python -m vlmq.cli ...`: the `vlmq` command."""

from vlmq.cli.commands import app

app()
