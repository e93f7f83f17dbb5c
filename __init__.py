"""fedaegis: federated robustness evaluation of medical imaging models.

The repository root is this package: ``fedaegis.server`` (the Flower ServerApp),
``fedaegis.client`` (the ClientApp run at each hospital), ``fedaegis.shared``
(data, models, metrics and the results store used by both sides) and
``fedaegis.orchestration`` (simulation and the command line).
"""

__version__ = "0.1.0"
