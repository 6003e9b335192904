"""Run-time plumbing shared by stages: device choice, seeding, progress bars, normalisation."""

from __future__ import annotations

import os
import random
import sys
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

__all__ = ["resolve_device", "seed_everything", "progress", "normalizer", "normalized_batches", "log", "limit_threads",
           "ThreadLimit", "usable_cpus", "worker_processes", "run_jobs", "one_thread", "layer_workers", "job_threads",
           "collect_jobs", "PARALLEL_FROM",
           "SINGLE_THREAD_BELOW", "THREAD_VARIABLES", "WORKERS_VARIABLE"]

SINGLE_THREAD_BELOW = 10_000      # points: analysis stages keep BLAS / OpenMP / numba on one thread below this
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
PARALLEL_FROM = 500               # points: from here reduce and probe run their layers in worker processes
WORKERS_VARIABLE = "HIDDEN_SPACES_WORKERS"   # processes that draw figures (render); 1: draw in the stage's own process


def usable_cpus() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                                   # macOS, Windows
        return max(1, os.cpu_count() or 1)


def worker_processes(n_jobs: int, per_worker: int = 4, *, worth_it: bool = True) -> int:
    """How many processes should share ``n_jobs`` independent jobs: every usable core, but at
    least ``per_worker`` jobs each (starting a process costs one to three seconds of imports),
    none when the caller says the jobs are too small to be ``worth_it``, and
    ``HIDDEN_SPACES_WORKERS`` when the user set it (1: no extra processes; it overrides both
    rules). A worker count is never part of a result: the outputs are the same whichever process
    made them."""
    from pipeline.errors import UsageError

    wanted = os.environ.get(WORKERS_VARIABLE, "").strip()
    if wanted:
        if not wanted.isdigit() or int(wanted) < 1:
            raise UsageError(f"{WORKERS_VARIABLE}={wanted!r} is not a whole number of processes; "
                             f"set it to 1 or more, or unset it to use every core")
        return max(1, min(int(wanted), n_jobs))
    if not worth_it:
        return 1
    return max(1, min(usable_cpus(), n_jobs // per_worker))


def _start_worker() -> None:
    """A worker process of :func:`run_jobs`: Ctrl-C is the parent's to handle (it stops the pool
    and says so in one line), and one BLAS / OpenMP thread, since the processes share the cores
    (the environment it was started with already says so to libraries loaded later)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def one_thread() -> ThreadLimit:
    """:func:`limit_threads` whatever the input size: BLAS, OpenMP and numba on one thread (a
    thread count the user set in the environment is still left as it is). For work that runs
    the same way in a worker process of :func:`run_jobs` and in the stage's own process."""
    return limit_threads(0, below=1)


def run_jobs(function: Any, jobs: Sequence[Any], *, workers: int = 1) -> Iterator[tuple[int, Any]]:
    """``(i, function(jobs[i]))`` for every job, in the order they finish. ``workers`` above 1
    runs them in that many fresh processes (``spawn``: nothing of the caller's state, no forked
    threads), each on one thread; ``function`` must be a module-level function and the jobs and
    results picklable (plain data, paths, arrays). Jobs go out in the order given, so put the
    longest first. A job's exception is raised here, in the caller, and stops the pool."""
    if workers <= 1 or len(jobs) < 2:
        for i, job in enumerate(jobs):
            yield i, function(job)
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    saved = {var: os.environ.get(var) for var in THREAD_VARIABLES}
    for var in THREAD_VARIABLES:                 # the children load their libraries with one thread
        if not saved[var]:
            os.environ[var] = "1"
    try:
        pool = context.Pool(min(workers, len(jobs)), initializer=_start_worker)
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
    with pool:
        yield from pool.imap_unordered(_numbered, [(function, i, job) for i, job in enumerate(jobs)])


def layer_workers(n_jobs: int, n_points: int) -> int:
    """The rules of a stage that runs one job per layer (reduce, probe): several layers run on one
    thread each, in a worker or in the stage's process (:func:`one_thread`: the same numbers for
    any number of workers), a single layer gets every core (:func:`limit_threads`); returns the
    worker processes wanted (:func:`worker_processes`, none below :data:`PARALLEL_FROM` points)."""
    if job_threads(n_jobs) == 1:
        one_thread()
    else:
        limit_threads(n_points)                  # small inputs: one thread is faster
    return worker_processes(n_jobs, per_worker=2, worth_it=n_points >= PARALLEL_FROM)


def job_threads(n_jobs: int) -> int | None:
    """Threads of each job's own thread pools (t-SNE's ``n_jobs``) in a stage of one job per layer,
    by the rule of :func:`layer_workers`: 1 when there are several layers, None (the process's,
    by input size) for a single one."""
    return 1 if n_jobs > 1 else None


def collect_jobs(function: Any, jobs: Sequence[Any], names: Sequence[str], *, workers: int, desc: str) -> dict[str, Any]:
    """:func:`run_jobs` under a progress bar: ``{names[i]: function(jobs[i])}``, in the order they
    finished (a stage writes its outputs in its own order from it)."""
    found: dict[str, Any] = {}
    bar = progress(total=len(jobs), desc=desc, unit="layer")
    for i, result in run_jobs(function, jobs, workers=workers):
        found[names[i]] = result
        bar.set_postfix_str(names[i], refresh=False)
        bar.update(1)
    bar.close()
    return found


def _numbered(task: tuple[Any, int, Any]) -> tuple[int, Any]:
    function, i, job = task
    return i, function(job)


def log(message: str) -> None:
    """A status line on stderr (stdout stays clean for data)."""
    print(message, file=sys.stderr, flush=True)


def resolve_device(name: str) -> "Any":
    """``auto`` -> cuda, then mps, then cpu; an explicit device that is missing is an error."""
    import torch

    from pipeline.errors import UserError

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device = cuda but no CUDA GPU is visible; use device: auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("train.device = mps but Apple MPS is not available; use device: auto or cpu")
    return torch.device(name)


def seed_everything(seed: int, *, graph_mode: bool = False) -> None:
    """Seed Python, NumPy and torch; deterministic kernels where torch has them.

    ``torch.use_deterministic_algorithms`` also sets torch.compile's inductor option, and imports
    torch.compile's whole stack for it (1.5 s per stage on this project's 2-core machine): eager
    stages (``graph_mode`` False, nothing compiled yet) set the same switch without that import."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    switch = getattr(torch._C, "_set_deterministic_algorithms", None)
    if graph_mode or switch is None or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        switch(True, warn_only=True)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             leave: bool = True) -> Any:
    """A tqdm bar on stderr; off when HIDDEN_SPACES_QUIET=1, sparse when stderr is not a terminal."""
    from tqdm.auto import tqdm

    disable = os.environ.get("HIDDEN_SPACES_QUIET") == "1"
    interactive = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=disable,
                file=sys.stderr, dynamic_ncols=True, mininterval=0.5 if interactive else 10.0)


def normalizer(mean: Sequence[float], std: Sequence[float], device: Any) -> Any:
    """A function uint8 (B, C, H, W) -> float32 normalised with the dataset's per-channel mean/std."""
    import torch

    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1).clamp_min(1e-6)

    def normalize(x: "torch.Tensor") -> "torch.Tensor":
        return (x.to(device=device, dtype=torch.float32) / 255.0 - m) / s

    return normalize


def normalized_batches(images: Any, normalize: Any, batch_size: int) -> Iterator[tuple[int, Any]]:
    """``(start, normalize(images[start:start + batch_size]))`` over ``images`` (N, C, H, W) uint8,
    a tensor or a NumPy array (each chunk converted on its own, so a memory map is read in chunks)."""
    import torch

    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        if not torch.is_tensor(chunk):
            chunk = torch.from_numpy(np.ascontiguousarray(chunk))
        yield start, normalize(chunk)


class ThreadLimit:
    """What :func:`limit_threads` changed, and how to undo it: ``applied`` says whether it did
    anything; :meth:`restore` (or leaving a ``with`` block) puts back the environment variables,
    the BLAS / OpenMP pools and numba's thread count as they were. Libraries first loaded while
    the limit held keep one thread: their pool size is read when they load."""

    def __init__(self, applied: bool, env: dict[str, str | None], limiter: Any = None,
                 numba_threads: int | None = None):
        self.applied, self._env, self._limiter, self._numba_threads = applied, env, limiter, numba_threads

    def restore(self) -> None:
        if not self.applied:
            return
        for var, value in self._env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        if self._limiter is not None:
            self._limiter.restore_original_limits()
        numba = sys.modules.get("numba")
        if numba is not None and self._numba_threads is not None:
            numba.set_num_threads(self._numba_threads)
        self.applied = False

    def __bool__(self) -> bool:
        return self.applied

    def __enter__(self) -> "ThreadLimit":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()


def limit_threads(n_points: int, below: int = SINGLE_THREAD_BELOW) -> ThreadLimit:
    """Put BLAS, OpenMP and numba on one thread when the stage handles fewer than ``below``
    points. A stage calls it once and keeps the limit for the rest of its process; a notebook or
    a test undoes it with ``with limit_threads(n): ...`` or ``.restore()``. The result is true
    when the limit was applied.

    For the analysis stages (reduce, probe, diagnose) work on a few thousand points is a long
    series of small matrix products, neighbour searches and numba loops, where a second thread
    mostly waits for the first. Measured on 2 cores, idle machine, 1,000 points: reduce tsne
    42 -> 26 s, reduce pca 7.4 -> 5.4 s, probe 9.2 -> 4.9 s; 5,000 points: probe 113 -> 56 s,
    reduce pca / tsne / umap within 5%. When other processes compete for the cores (another
    stage, ``dvc exp run --jobs 2``, a test suite) the threads of one library spin-wait for each
    other and two threads cost 5-15x (probe 105 s instead of 7 s). openTSNE keeps its own
    thread count (``reducers._n_jobs``). A thread count the user set in the environment
    (:data:`THREAD_VARIABLES`, e.g. ``OMP_NUM_THREADS=8 dvc repro``) is always left as it is.
    """
    if n_points >= below or any(os.environ.get(v) for v in THREAD_VARIABLES):
        return ThreadLimit(False, {})
    numba = sys.modules.get("numba")
    env = {var: os.environ.get(var) for var in THREAD_VARIABLES}
    for var in THREAD_VARIABLES:                 # libraries loaded later read these at load time
        if not (var == "NUMBA_NUM_THREADS" and numba is not None):
            os.environ[var] = "1"
    from threadpoolctl import threadpool_limits

    limiter = threadpool_limits(limits=1)        # BLAS / OpenMP runtimes already loaded (numpy's OpenBLAS)
    numba_threads = None
    if numba is not None:
        # numba already imported: its pool size is fixed at import, so only the number of threads
        # used is lowered; changing NUMBA_NUM_THREADS now would make numba refuse to run
        # ("Cannot set NUMBA_NUM_THREADS to a different value once the threads have been launched")
        numba_threads = numba.get_num_threads()
        numba.set_num_threads(1)
    return ThreadLimit(True, env, limiter, numba_threads)
