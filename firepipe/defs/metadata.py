"""Metadata helpers shared by the asset definitions."""

import base64

import dagster as dg
import polars as pl


def markdown_table(frame: pl.DataFrame) -> dg.MetadataValue:
    """A frame as a markdown table for the UI: floats to 6 significant digits, nulls empty."""

    def cell(value: object) -> str:
        if value is None:
            return ""
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.width]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return dg.MetadataValue.md("\n".join(lines))


def png_markdown(png: bytes, title: str) -> dg.MetadataValue:
    """A PNG shown in the UI (markdown with a data URI), at its own pixel size: the UI's
    markdown takes no width, so draw it at the width it should be read at."""
    encoded = base64.b64encode(png).decode("ascii")
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")
