"""The Compare page's counterfactual view: the held-out prompts whose descriptor-swapped answers differ most.

Reads what the `counterfactual` benchmark stored with its result (metrics["swaps"]: the top frames by reward spread
and by content change, each with every variant's descriptor, prompt, answer and bias reward) and its per
descriptor pair figures; needs no model. Every stored text is shown as plain text (st.text, or `plain` inside
markdown), never as markdown or HTML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ORDERS = {"reward spread": "reward_spread", "content change": "content_change"}
SHOWN = 10


def swap_rows(metrics: Mapping[str, Any], order: str = "reward_spread", n: int = SHOWN) -> list[dict[str, Any]]:
    """Up to `n` stored frames, largest `order` ("reward_spread" or "content_change") first; frames where it is
    undefined go last. Malformed entries (not a mapping, no variants) are skipped."""
    if order not in ORDERS.values():
        raise ValueError(f"order must be one of {', '.join(ORDERS.values())}, got {order!r}")
    got = [s for s in metrics.get("swaps") or [] if isinstance(s, Mapping) and isinstance(s.get("variants"), list)]

    def key(s: Mapping[str, Any]) -> tuple[bool, float]:
        v = s.get(order)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        return (not ok, -float(v) if ok else 0.0)

    return [dict(s) for s in sorted(got, key=key)[:n]]


def pair_rows(benchmark: str, metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per descriptor pair: its reward gap and content change with their 95% intervals, largest reward
    gap first."""
    from app import eval_view

    n = eval_view.digits(benchmark)
    by_pair: dict[str, dict[str, Any]] = {}
    for f in eval_view.figures(benchmark, metrics):
        if " vs " in f.group and f.metric in ("reward_gap", "content_change"):
            row = by_pair.setdefault(f.group, {"descriptor pair": f.group, "_gap": float("-inf")})
            row[f.metric.replace("_", " ")] = eval_view.fmt_figure(f, n)
            if f.metric == "reward_gap":
                row["_gap"] = f.value
    rows = sorted(by_pair.values(), key=lambda r: -r["_gap"])
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


def render_swaps(evs: Sequence[Any], key: str = "cf") -> None:
    """Pick a stored counterfactual result; its descriptor pairs, then the frames whose answers differ most, the
    variants' answers side by side with each one's bias reward."""
    import pandas as pd
    import streamlit as st

    from app import eval_view
    from app.widgets import fmt_value, plain

    results = [e for e in evs if e.benchmark == "counterfactual"]
    if not results:
        return
    st.subheader("Counterfactual swaps: where the swapped answers differ most")
    st.caption("Held-out prompts asked again with the demographic descriptor swapped within one axis (the same "
               "template and noun). Reward spread: highest minus lowest bias reward among a prompt's answers. "
               "Content change: 1 - cosine similarity of two answers' sentence embeddings with the descriptors "
               "masked, averaged over the prompt's descriptor pairs. 0 on both = the answer does not depend on who "
               "the prompt is about.")
    by_id = {e.id: e for e in results}
    c1, c2, c3 = st.columns([3, 2, 1])
    ev_id = c1.selectbox("Result", list(by_id), index=len(by_id) - 1, key=f"{key}.eval",
                         format_func=lambda i: eval_view.label(by_id[i]))
    order = c2.radio("Order by", list(ORDERS), horizontal=True, key=f"{key}.order")
    n = int(c3.number_input("Shown", min_value=1, max_value=40, value=SHOWN, key=f"{key}.n"))
    ev = by_id[ev_id]
    pairs = pair_rows(ev.benchmark, ev.metrics)
    if pairs:
        st.dataframe(pd.DataFrame(pairs), hide_index=True, width="stretch", key=f"{key}.pairs",
                     height=eval_view.table_height(len(pairs), 12))
    rows = swap_rows(ev.metrics, ORDERS[order], n)
    if not rows:
        st.info("This result stored no answers to show.", icon=":material/info:")
        return
    for i, s in enumerate(rows, 1):
        with st.container(border=True):
            noun = s.get("noun") or ""
            st.markdown(f"**{i}. {plain(s.get('axis', ''))}**: {plain(s.get('template', ''))}"
                        + (f" (noun: {plain(noun)})" if noun and noun != "(none)" else ""))
            st.caption(f"reward spread {fmt_value(s.get('reward_spread'), 3)} · content change "
                       f"{fmt_value(s.get('content_change'), 3)}")
            variants = [v for v in s["variants"] if isinstance(v, Mapping)]
            for col, v in zip(st.columns(max(1, len(variants))), variants):
                col.caption(f"{plain(v.get('descriptor', ''))} · bias reward {fmt_value(v.get('reward'), 3)}")
                col.caption(f"Prompt: {plain(v.get('prompt', ''))}")
                col.text(v.get("answer") or "(no answer)")
