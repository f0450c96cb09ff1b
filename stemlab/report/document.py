"""A tiny document model rendered to Markdown and to a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field

import pandas as pd

__all__ = ["Document", "format_value", "markdown_table"]


def format_value(value: object) -> str:
    """A table cell: integers with thousands separators, floats to 4 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (
        isinstance(value, float) and value.is_integer() and abs(value) >= 1000
    ):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a GitHub-flavoured Markdown table (no extra dependency)."""
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = [
        "| " + " | ".join(format_value(v).replace("|", "\\|") for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body])


def _anchor(text: str) -> str:
    """GitHub-style heading anchor: lower case, spaces to dashes, punctuation dropped."""
    return re.sub(r"[^a-z0-9 -]", "", text.lower()).strip().replace(" ", "-")


def _inline_html(text: str) -> str:
    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


@dataclass
class Document:
    """Blocks of a report, in order; render with :meth:`markdown` or :meth:`html`."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("heading", text))

    def contents(self) -> None:
        """A table of contents of the document's headings (filled in when rendered)."""
        self.blocks.append(("contents",))

    def link(self, text: str, target: str) -> None:
        """A paragraph that is one link (to a file beside the report)."""
        self.blocks.append(("link", text, target))

    def _headings(self) -> list[str]:
        return [b[1] for b in self.blocks if b[0] == "heading"]

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("bullets", items))

    def table(self, frame: pd.DataFrame) -> None:
        self.blocks.append(("table", frame))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def figure(self, path: str, caption: str, png: bytes) -> None:
        self.blocks.append(("figure", path, caption, png))

    def markdown(self) -> str:
        """The document as Markdown; figures link to their files."""
        parts = [f"# {self.title}"]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                parts.append(f"## {block[1]}")
            elif kind == "contents":
                parts.append(
                    "**Contents:** " + " · ".join(f"[{h}](#{_anchor(h)})" for h in self._headings())
                )
            elif kind == "link":
                parts.append(f"[{block[1]}]({block[2]})")
            elif kind == "paragraph":
                parts.append(block[1])
            elif kind == "bullets":
                parts.append("\n".join(f"- {item}" for item in block[1]))
            elif kind == "table":
                parts.append(markdown_table(block[1]))
            elif kind == "code":
                parts.append(f"```\n{block[1]}\n```")
            elif kind == "figure":
                parts.append(f"![{block[2]}]({block[1]})\n\n*{block[2]}*")
        return "\n\n".join(parts) + "\n"

    def html(self) -> str:
        """The document as one HTML page with every image embedded (no external files)."""
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                body.append(f'<h2 id="{_anchor(block[1])}">{html.escape(block[1])}</h2>')
            elif kind == "contents":
                links = " · ".join(
                    f'<a href="#{_anchor(h)}">{html.escape(h)}</a>' for h in self._headings()
                )
                body.append(f'<nav class="toc"><strong>Contents:</strong> {links}</nav>')
            elif kind == "link":
                body.append(f'<p><a href="{html.escape(block[2])}">{html.escape(block[1])}</a></p>')
            elif kind == "paragraph":
                body.append(f"<p>{_inline_html(block[1])}</p>")
            elif kind == "bullets":
                body.append(
                    "<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block[1]) + "</ul>"
                )
            elif kind == "table":
                frame = block[1].map(format_value) if len(block[1]) else block[1]
                body.append(
                    '<div class="scroll">'
                    + frame.to_html(index=False, border=0, classes="table", escape=True)
                    + "</div>"
                )
            elif kind == "code":
                body.append(f"<pre>{html.escape(block[1])}</pre>")
            elif kind == "figure":
                data = base64.b64encode(block[3]).decode("ascii")
                body.append(
                    f'<figure><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(block[2])}</figcaption></figure>"
                )
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
            "color:#222}table{border-collapse:collapse;font-size:13px;margin:1em 0}"
            "th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}"
            "th{background:#f4f4f4}img{max-width:100%}figure{margin:1.5em 0}"
            "figcaption{color:#555;font-size:13px}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}"
            "code{background:#f2f2f2;padding:0 3px}.scroll{overflow-x:auto;max-width:100%}"
            ".toc{background:#f7f7f7;padding:.5em .8em;margin:1em 0;font-size:14px}"
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{style}</style></head><body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )
