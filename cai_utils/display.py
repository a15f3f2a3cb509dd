"""Small views for notebooks: texts side by side, shares with intervals as bar charts."""

from __future__ import annotations

import html


def side_by_side(columns: dict[str, list[str]], width: int = 600):
    """An HTML table with one column per heading and one row per item (texts escaped)."""
    from IPython.display import HTML

    heads = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in columns)
    rows = []
    for cells in zip(*columns.values()):
        tds = "".join(f"<td style='text-align:left;vertical-align:top;white-space:pre-wrap;"
                      f"max-width:{width}px'>{html.escape(str(c))}</td>" for c in cells)
        rows.append(f"<tr>{tds}</tr>")
    return HTML(f"<table><tr>{heads}</tr>{''.join(rows)}</table>")


def share_bars(stats: dict[str, dict], title: str = "", ax=None):
    """Horizontal bars for ``{label: {"share", "ci95", "n"}}`` with 95% interval whiskers."""
    import matplotlib.pyplot as plt

    labels = [k for k, v in stats.items() if v.get("share") is not None]
    shares = [stats[k]["share"] for k in labels]
    lows = [stats[k]["share"] - stats[k]["ci95"][0] for k in labels]
    highs = [stats[k]["ci95"][1] - stats[k]["share"] for k in labels]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.45 * len(labels) + 1))
    ax.barh([f"{k.replace('_', ' ')} (n={stats[k]['n']})" for k in labels], shares,
            xerr=[lows, highs], color="#4c72b0", capsize=3)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("share, with 95% interval")
    ax.set_title(title)
    return ax
