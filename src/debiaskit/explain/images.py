"""Images for people: grids with a label per row and a title per column (the explain
PNGs), and PNG bytes as data URIs for self-contained HTML pages."""

from __future__ import annotations

import base64
from pathlib import Path

from .curves import save_png


def data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:`` URI, to embed in an HTML page without a separate file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def save_image_grid(rows, column_titles: list[str], path, title: str = "",
                    cell_width: float = 1.0, height: float = 4.6) -> Path:
    """Write a PNG: one row per ``(label, images)`` pair (C x H x W in [0, 1], grey when
    C = 1), one column per entry of ``column_titles``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = len(column_titles)
    fig, axes = plt.subplots(len(rows), columns, figsize=(cell_width * columns + 1.2, height),
                             squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            img = images[c].detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
            grey = img.shape[-1] == 1
            ax.imshow(img.squeeze(-1) if grey else img, cmap="gray" if grey else None,
                      vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
            if r == 0:
                ax.set_title(column_titles[c], fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    save_png(fig, Path(path))
    return Path(path)
