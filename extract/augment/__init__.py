"""Augmentations and augmented views (README, "Augmented views").

Importing the package registers every augmentation in :data:`AUGMENTS`: ``rawboost`` (Tak et al.
2022, algorithms 1 to 8), ``codec``, ``telephony``, ``speed``, ``gain`` (extract.augment.channel),
``noise``, ``reverb`` (extract.augment.acoustic). Views: extract.augment.views; the cost estimate:
extract.augment.estimate.
"""

from extract.augment import acoustic, channel, rawboost  # noqa: F401  (registration)
from extract.augment.base import AUGMENTS, Augmentation, AugmentError, build
from extract.augment.estimate import ViewCost, estimate, format_estimate
from extract.augment.views import (
    DEFAULT_STREAMS,
    STREAMS,
    View,
    apply_view,
    load_views,
    parse_views,
    recipe_differences,
    select,
    step_generators,
    utterance_seed,
    version_differences,
    versions,
    view_from_recipe,
)

__all__ = ["AUGMENTS", "DEFAULT_STREAMS", "STREAMS", "AugmentError", "Augmentation", "View", "ViewCost", "apply_view",
           "build", "estimate", "format_estimate", "load_views", "parse_views", "recipe_differences", "select", "step_generators",
           "utterance_seed", "version_differences", "versions", "view_from_recipe"]
