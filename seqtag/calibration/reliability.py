"""Reliability diagrams: accuracy against confidence, bin by bin, as a PNG.

A diagram shows *where* a tagger is over- or under-confident, which one ECE number hides.
matplotlib is optional (the ``plot`` extra), so it is imported only when a diagram is drawn,
and without pyplot: a bare :class:`~matplotlib.figure.Figure` renders with Agg and leaves the
process's global backend alone.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from seqtag.calibration.metrics import ReliabilityBin, ece_from_bins
from seqtag.errors import OutputError, SeqtagError

__all__ = ["PlotDependencyError", "ReliabilityDiagram", "save_reliability_diagram"]

log = logging.getLogger(__name__)

BinsLike = Sequence[ReliabilityBin] | Sequence[Mapping[str, Any]]


class PlotDependencyError(SeqtagError, ImportError):
    """matplotlib, needed for a plot, is not installed."""


def _as_bins(bins: BinsLike) -> list[ReliabilityBin]:
    """Bins as :class:`ReliabilityBin`, also when read back from JSON as dicts."""
    return [b if isinstance(b, ReliabilityBin) else ReliabilityBin(**b) for b in bins]


def save_reliability_diagram(
    path: str | PathLike[str],
    curves: Mapping[str, BinsLike],
    title: str = "reliability diagram",
) -> None:
    """Write a PNG reliability diagram of one or more curves, e.g. before and after calibration.

    The top panel plots each curve's accuracy against mean confidence in its non-empty bins,
    with the diagonal of perfect calibration and each curve's ECE in the legend; the bottom
    panel shows how many predictions each bin holds (log scale: most sit in the top bin), so
    a point backed by a handful of tokens is not over-read. Missing parent directories are
    created; an existing file is replaced.

    Args:
        path: the PNG to write (PNG whatever its suffix).
        curves: name -> bins, as :func:`seqtag.calibration.metrics.reliability_bins` returns them or
            as their ``as_dict()`` forms.
        title: the figure's title.

    Raises:
        PlotDependencyError: matplotlib is not installed.
        OutputError: ``path`` is a directory.
        ValueError: no curves are given.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotDependencyError(
            'reliability diagrams need matplotlib: pip install "seqtag[plot]"'
        ) from None
    if not curves:
        raise ValueError("no curves to plot")
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{target}: is a directory; give the path of a PNG file to write")
    named = {name: _as_bins(bins) for name, bins in curves.items()}

    figure = Figure(figsize=(6.0, 7.0), layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    bar_width = min((b.upper - b.lower for bins in named.values() for b in bins), default=0.1)
    bar_width /= len(named) + 0.5
    for k, (name, bins) in enumerate(named.items()):
        filled = [b for b in bins if b.count and b.accuracy is not None]
        ece = ece_from_bins(bins)
        label = f"{name} (ECE {ece:.3f})" if not math.isnan(ece) else f"{name} (no data)"
        (line,) = top.plot(
            [b.confidence for b in filled],
            [b.accuracy for b in filled],
            marker="o",
            markersize=4,
            linewidth=1.5,
            label=label,
        )
        offset = (k - (len(named) - 1) / 2) * bar_width
        bottom.bar(
            [(b.lower + b.upper) / 2 + offset for b in filled],
            [b.count for b in filled],
            width=bar_width,
            color=line.get_color(),
            label=name,
        )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(title)
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    if any(b.count for bins in named.values() for b in bins):
        bottom.set_yscale("log")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("count")
    bottom.grid(alpha=0.3, axis="y")

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, dpi=120, format="png")
    except OSError as error:
        raise OutputError(f"{target}: cannot write the diagram: {error}") from error


class ReliabilityDiagram(Callback):
    """After a test run, save the reliability of the test confidences: bins and diagrams.

    ``seqtag test`` adds it (``--reliability.enabled false`` turns it off); in your own
    Trainer add ``seqtag.ReliabilityDiagram()``. It writes, to the logger's folder
    (where ``ConfusionMatrixPlot`` puts ``confusion_matrix.png``) or ``dirpath``:

    - ``reliability.json``: the temperature, each curve's ECE and its bins (count, mean
      confidence and accuracy), as :class:`~seqtag.calibration.metrics.ReliabilityBin` dicts;
    - ``reliability.png``: token confidences with the model's temperature and without it
      (temperature 1), accuracy against confidence in 15 equal-width bins, with bin counts;
    - ``span_reliability.png``: the same for span confidences (span tasks only).

    The PNGs need matplotlib (``pip install "seqtag[plot]"``); without it only the JSON is
    written, with a note in the log. Without a logger and without ``dirpath`` nothing is
    written: the working folder is no place for files a second run would overwrite.

    The bins are those of the ``test_ece*`` metrics, summed across processes; rank 0 writes.

    Args:
        dirpath: folder of the files; default the logger's folder.
        enabled: write them (``seqtag test`` adds this callback; ``false`` turns it off).
    """

    def __init__(self, dirpath: str | None = None, enabled: bool = True) -> None:
        try:
            import matplotlib  # noqa: F401

            self.plots = True
        except ImportError:
            self.plots = False
        self.dirpath = dirpath
        self.enabled = enabled
        self.paths: list[Path] = []

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or (self.dirpath is None and not trainer.loggers):
            return
        # trainer.log_dir is a collective under DDP (rank 0 broadcasts it): every rank asks.
        folder = Path(self.dirpath or trainer.log_dir or trainer.default_root_dir)
        calibration = getattr(pl_module, "test_calibration", None)
        if not trainer.is_global_zero or not getattr(calibration, "bins", None):
            return
        temperature = float(pl_module.tagger.temperature)
        bins, values = calibration.bins, calibration.values
        report: dict[str, Any] = {"bins": len(bins["ece"]), "temperature": temperature}
        self.paths = []
        for level, prefix, title in (
            ("token", "", "token confidence"),
            ("span", "span_", "span confidence"),
        ):
            if f"{prefix}ece" not in bins:
                continue
            calibrated, uncalibrated = bins[f"{prefix}ece"], bins[f"{prefix}ece_uncalibrated"]
            report[level] = {
                "ece": _number(values[f"{prefix}ece"]),
                "ece_uncalibrated": _number(values[f"{prefix}ece_uncalibrated"]),
                "calibrated": [b.as_dict() for b in calibrated],
                "uncalibrated": [b.as_dict() for b in uncalibrated],
            }
            if self.plots:
                path = folder / f"{prefix}reliability.png"
                curves = {
                    f"T = {temperature:.3g}": calibrated,
                    "T = 1 (uncalibrated)": uncalibrated,
                }
                save_reliability_diagram(path, curves, f"test {title}")
                self.paths.append(path)
        path = folder / "reliability.json"
        if not self.plots:
            log.info(
                'reliability diagrams need matplotlib (pip install "seqtag[plot]"): '
                "writing only %s",
                path,
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        except OSError as error:
            raise OutputError(f"{path}: cannot write the reliability bins: {error}") from error
        self.paths.append(path)


def _number(value: float) -> float | None:
    """JSON has no NaN: an undefined ECE (nothing scored) is null."""
    return None if math.isnan(value) else value
