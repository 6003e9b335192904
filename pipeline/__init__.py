"""hidden-spaces: see, and measure, what the hidden layers of an image network learned.

The package is a set of pipeline stages (``pipeline.stages``) wired by ``dvc.yaml``; every
stage is also a plain function you can call from Python. ``python -m pipeline --help`` lists
the command-line stages.
"""

__version__ = "0.1.0"
