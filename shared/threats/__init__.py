"""Poisoning threats a malicious site can mount: backdoors, label flipping, model replacement.

They run at a site that the experiment declares malicious, to measure how far each
aggregation rule (``fedaegis.server.strategies``) lets them through.
"""

from .backdoor import Poisoned, Trigger, backdoor_counts, poison, poison_imageset, stamp_trigger
from .label_flip import flip_imageset, flip_labels
from .model_replacement import boost_update, replacement_boost

__all__ = [
    "Poisoned",
    "Trigger",
    "backdoor_counts",
    "boost_update",
    "flip_imageset",
    "flip_labels",
    "poison",
    "poison_imageset",
    "replacement_boost",
    "stamp_trigger",
]
