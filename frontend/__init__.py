"""The Gradio web frontend (`vlmq frontend`): a pure HTTP client of the API, see `frontend/app.py`."""

import os

# No usage analytics or version pings: the frontend also runs on machines without internet.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
