"""Prints every `VLMQ_*` setting as a Markdown table (the README's configuration table)."""

from __future__ import annotations

from vlmq.settings import Settings


def table() -> str:
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default if field.default_factory is None else field.default_factory()
        if hasattr(default, "get_secret_value") or default is None:
            default = ""
        shown = f"`{default}`" if default not in ("", [], {}) else ""
        rows.append(f"| `VLMQ_{name.upper()}` | {shown} | {(field.description or '').replace('|', '/')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
