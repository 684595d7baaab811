"""Low-dose simulation as seeded ``nn.Module``s: the study's image method and projection physics.

``simulate_low_dose(hu, dose, method="projection", seed=0)`` is the functional entry point;
``simulators`` lists the registered methods.
"""

from lowdose.physics.api import build_simulator, simulate_low_dose
from lowdose.physics.base import LowDoseSimulator, simulators

__all__ = ["LowDoseSimulator", "build_simulator", "simulate_low_dose", "simulators"]
