"""One module per pipeline stage, each with ``run(params) -> dict``.

Stages read their inputs from and write their outputs to the paths in :mod:`pipeline.paths`;
the compute they call lives in plain functions elsewhere (models, reducers, plots, ...).
"""
