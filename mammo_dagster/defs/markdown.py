"""Metadata a person reads in the Dagster UI: markdown tables and inline PNGs."""

import base64
import io

from PIL import Image


def md_table(header: list[str], rows: list[list]) -> str:
    """A markdown table; None shows as a dash."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("—" if c is None else str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def md_image(png: bytes, alt: str) -> str:
    """A PNG inline as a markdown image (a data URI)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
