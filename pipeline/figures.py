"""Figure jobs: what to draw, as plain data, so that drawing can run anywhere.

A planner (e.g. the render stage's, one per figure family) computes every number first and
returns a :class:`Plan`: ``metrics`` (the numbers, known before anything is drawn) and ``jobs``,
a list of independent :class:`FigureJob` -- an output file name, a module-level drawing function
and its plain arguments (arrays, numbers, strings, and :class:`Rows` for large arrays on disk,
read only when the job is drawn). A job holds no open files, lambdas or models, so a caller can
draw the list serially (:func:`draw_all`) or hand the jobs to a process pool
(``pool.map(partial(draw, directory=..., dpi=...), jobs)``): each is pickled on its own, and the
outputs do not depend on the order or the process they are drawn in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

__all__ = ["Rows", "FigureJob", "Plan", "make", "draw", "draw_all", "GIF_DPI"]

GIF_DPI = 80                       # animated GIFs are drawn at most at this resolution (size on disk)


@dataclass(frozen=True)
class Rows:
    """A 2-D ``.npy`` on disk, read (memory-mapped) when a job is drawn: ``n`` rows expected,
    ``what`` names it and ``fix`` says what to rerun in the one-line error when it has another
    number of rows (:func:`pipeline.artifacts.load_rows`)."""

    path: Path
    n: int
    what: str = "array"
    fix: str = "rerun the stage that wrote it (`dvc repro`)"

    def load(self) -> np.ndarray:
        from pipeline import artifacts

        return artifacts.load_rows(self.path, self.n, what=self.what, mmap=True, fix=self.fix)


@dataclass(frozen=True)
class FigureJob:
    """One output file: ``draw(*args, **kwargs)`` returns a matplotlib Figure (``.png``) or an
    Animation (``.gif``). :class:`Rows` among the arguments (also inside a list, tuple or dict)
    are loaded first."""

    name: str
    draw: Callable[..., Any]
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """What a planner decided: the numbers (``metrics``, in a stable order) and the figures."""

    metrics: dict[str, Any] = field(default_factory=dict)
    jobs: list[FigureJob] = field(default_factory=list)

    def add(self, name: str, draw: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.jobs.append(FigureJob(name, draw, args, kwargs))

    def extend(self, other: "Plan", *, figures: bool = True) -> "Plan":
        """Add ``other``'s numbers, and its figures unless ``figures`` is False."""
        self.metrics.update(other.metrics)
        if figures:
            self.jobs.extend(other.jobs)
        return self


def _resolve(value: Any) -> Any:
    if isinstance(value, Rows):
        return value.load()
    if isinstance(value, list):
        return [_resolve(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve(v) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    return value


def make(job: FigureJob) -> Any:
    """The Figure or Animation of ``job`` (its :class:`Rows` loaded), not saved."""
    return job.draw(*_resolve(job.args), **_resolve(job.kwargs))


def draw(job: FigureJob, directory: Path, dpi: int) -> str:
    """Draw ``job`` and save it atomically as ``directory / job.name`` (PNG at ``dpi``, GIF at
    most :data:`GIF_DPI`); returns the name. Safe to call in a worker process."""
    from pipeline import artifacts

    made = make(job)
    if job.name.endswith(".gif"):
        artifacts.save_animation(Path(directory) / job.name, made, dpi=min(dpi, GIF_DPI))
    else:
        artifacts.save_figure(Path(directory) / job.name, made, dpi=dpi)
    return job.name


def draw_all(jobs: Iterable[FigureJob], directory: Path, dpi: int, *, workers: int = 1,
             bar: Callable[[Iterable, int], Iterable] = lambda done, total: done) -> list[str]:
    """Draw every job and return the names, in the order of ``jobs``. ``workers`` above 1 draws
    them in that many fresh processes (``spawn``: nothing of the caller's state, no forked
    threads); the files are the same either way. ``bar(done, total)`` wraps the stream of
    finished names, e.g. in a progress bar."""
    from functools import partial

    from pipeline.runtime import run_jobs

    jobs = list(jobs)
    # the longest jobs first (animations, then the rest in their order), so no worker is left
    # with a GIF at the end while the others wait
    order = sorted(range(len(jobs)), key=lambda i: not jobs[i].name.endswith(".gif")) if workers > 1 else list(range(len(jobs)))
    done = (name for _, name in run_jobs(partial(draw, directory=directory, dpi=dpi), [jobs[i] for i in order],
                                         workers=workers))
    for _ in bar(done, len(jobs)):
        pass
    return [job.name for job in jobs]
