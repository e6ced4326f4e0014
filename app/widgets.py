"""Small display helpers shared by the pages: durations, status badges, the engine health banner, and user
text made plain for markdown."""

from __future__ import annotations

import re

import streamlit as st

from db.queue import live_workers
from db.session import Store

# Material icons render everywhere; emoji need a colour-emoji font that servers often lack.
STATUS_ICONS = {"queued": ":material/schedule:", "running": ":material/play_circle:",
                "completed": ":material/check_circle:", "failed": ":material/error:", "cancelled": ":material/cancel:"}
STATUS_COLOURS = {"queued": "gray", "running": "blue", "completed": "green", "failed": "red", "cancelled": "orange"}


# Every character Streamlit's markdown gives a meaning to: CommonMark and GFM (emphasis, code, links, images,
# headings, lists, tables, strikethrough, HTML, entities, setext underlines), math ($) and Streamlit's
# directives (:red[...], :material/...:). CommonMark lets any ASCII punctuation be backslash-escaped.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=])")
# Streamlit also rewrites text after parsing, when the escapes are already undone: :material_x: icons,
# :streamlit:, emoji shortcodes, bare URLs, www. and e-mail autolinks, and " -> " arrows. An invisible word
# joiner inside each pattern stops those rewrites without changing what the reader sees.
_WJ = "\u2060"
_POST_PARSE = re.compile(r"(?<=:)(?=\S)|(?<=@)(?=\S)|(?i:(?<=www)(?=\.))|(?<=[-<>=~])(?=[-<>=~])")


def plain(text: object, *, multiline: bool = False) -> str:
    """``text`` as markdown that Streamlit shows literally: for user text (run names, errors, prompts, model
    names) placed inside markdown, labels or alerts. Newlines become spaces, or line breaks with
    ``multiline``; either way no line can open a heading, list, table or code block."""
    lines = str(text).splitlines()
    if not multiline:
        lines = [" ".join(lines)]
    # A break with nothing after it would show as a stray backslash.
    while lines and not lines[-1].strip():
        lines.pop()
    out = []
    for line in lines:
        body = line.lstrip(" \t")
        # Leading blanks as no-break spaces: indentation stays visible and cannot start a code block. The
        # entity, not the character: renderers that trim Unicode whitespace off a paragraph keep it.
        indent = "&nbsp;" * len(line[:len(line) - len(body)].expandtabs(4))
        out.append(indent + _MD_SPECIAL.sub(r"\\\1", _POST_PARSE.sub(_WJ, body)))
    return "\\\n".join(out)  # a backslash before a newline is a hard line break


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def fmt_value(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


def status_badge(status: str) -> str:
    return f":{STATUS_COLOURS.get(status, 'gray')}[{STATUS_ICONS.get(status, '')} {status}]"


def engine_banner(store: Store, needed: bool) -> None:
    """Warn when runs wait in the queue but no engine is alive to take them."""
    if needed and not live_workers(store):
        st.warning("No engine is running, so queued runs wait. Start the studio with `studio up` (engine and app "
                   "together) or run `studio engine` in another terminal.", icon=":material/warning:")
