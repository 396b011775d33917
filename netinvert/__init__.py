"""netinvert: run trained neural networks in reverse.

``invert(model, target, domain, method=...)`` is the one entry point; ``load`` and ``load_zoo``
give models; targets and domains describe what to reach and where inputs may live.
"""

__version__ = "0.1.0"

from netinvert.domains.domain import Domain
from netinvert.domains.sets import Ball, Box
from netinvert.domains.transforms import Transforms
from netinvert.ground.errors import NetinvertError
from netinvert.ground.result import Item, Result
from netinvert.ground.spec import InputSpec
from netinvert.methods import invert
from netinvert.models.load import load
from netinvert.models.wrapper import Model
from netinvert.models.zoo import load_zoo
from netinvert.targets.activations import Activations
from netinvert.targets.base import Target
from netinvert.targets.output_set import OutputSet
from netinvert.targets.regression import Regression
from netinvert.targets.units import Channel, Class, Direction, Layer, Neuron

__all__ = [
    "Activations", "Ball", "Box", "Channel", "Class", "Direction", "Domain", "InputSpec", "Item", "Layer", "Model",
    "NetinvertError", "Neuron", "OutputSet", "Regression", "Result", "Target", "Transforms", "__version__", "invert",
    "load", "load_zoo",
]
