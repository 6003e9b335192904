"""Pure figure functions: arrays in, :class:`matplotlib.figure.Figure` out; no file reading.

The render stage (:mod:`pipeline.stages.render`) reads the artifacts, calls these and saves
the figures. One module per topic:

- :mod:`~pipeline.plots.common`: class colours, image display, scatter drawing, grids
- :mod:`~pipeline.plots.embeddings`: per-layer maps and the layer-by-layer progression grid
- :mod:`~pipeline.plots.weights`: filter montages, weight images, redundant filters
- :mod:`~pipeline.plots.predictions`: feature maps, dense activations, confusion matrix
- :mod:`~pipeline.plots.evolution`: a layer's map across the training snapshots (grid, GIF)
- :mod:`~pipeline.plots.classes`: outliers, class neighbours, class vectors of the output layer
"""

from __future__ import annotations

from pipeline.plots.classes import (class_distance_figure, class_distance_grid, class_embedding_figure,
                                    class_outliers, class_separation, outliers_figure)
from pipeline.plots.common import class_colors, display_images
from pipeline.plots.embeddings import progression_grid, scatter_embedding
from pipeline.plots.evolution import evolution_animation, evolution_grid
from pipeline.plots.predictions import (confusion_figure, confusion_matrix, dense_activations_figure,
                                        feature_maps_figure, pick_cases)
from pipeline.plots.weights import (conv_weights_grid, filter_correlations, filter_montage, redundancy_figure,
                                    redundant_pairs, weight_images)

__all__ = [
    "class_colors", "display_images",
    "scatter_embedding", "progression_grid",
    "filter_montage", "conv_weights_grid", "weight_images", "filter_correlations", "redundant_pairs",
    "redundancy_figure",
    "feature_maps_figure", "dense_activations_figure", "confusion_matrix", "confusion_figure", "pick_cases",
    "evolution_grid", "evolution_animation",
    "class_outliers", "outliers_figure", "class_separation", "class_distance_grid", "class_distance_figure",
    "class_embedding_figure",
]
