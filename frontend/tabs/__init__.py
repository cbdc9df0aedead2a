"""One module per tab: each builds its widgets and wires them to the API through vlmq.client."""
