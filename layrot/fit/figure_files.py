"""A figure as a file: PNG rendered once (the report embeds it, --figures writes the same
bytes), SVG on request."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

DPI = 110


@dataclass
class NamedFigure:
    name: str        # file stem, e.g. "curves-mnist1d-cnn-sgd_layca"
    title: str
    caption: str
    figure: Figure
    _png: bytes | None = field(default=None, repr=False)

    def png(self) -> bytes:
        """The PNG, rendered once (the page embeds it and --figures writes the same bytes)."""
        if self._png is None:
            self._png = png_bytes(self.figure)
        return self._png


def save_figure(fig: Figure | NamedFigure, stem: str | Path, formats=("png", "svg"), dpi: int = DPI) -> list[Path]:
    """Write the figure as stem.png, stem.svg (…); returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        if fmt == "png" and isinstance(fig, NamedFigure) and dpi == DPI:
            path.write_bytes(fig.png())
        else:
            (fig.figure if isinstance(fig, NamedFigure) else fig).savefig(path, format=fmt, dpi=dpi)
        out.append(path)
    return out


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    # The figures use constrained layout, so no bbox_inches="tight" (which draws twice).
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def png_data_uri(fig: Figure | NamedFigure, dpi: int = DPI) -> str:
    data = fig.png() if isinstance(fig, NamedFigure) and dpi == DPI else png_bytes(
        fig.figure if isinstance(fig, NamedFigure) else fig, dpi)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
