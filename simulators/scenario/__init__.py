"""Whole simulated stores: a scenario file, a behaviour model and the real edge daemon.

- `model`: the scenario file (pydantic; a bad value names its field).
- `behaviour`: shoppers, staff and online orders acting on the simulators' worlds.
- `store`: one store = one real `EdgeRuntime` with sim-llrp, sim-cu16 and sim-ble drivers.
- `fleet`: many stores on one asyncio loop (load mode), with their stats.
- `workers`: load mode over several processes (`--per-process`).
- `truth`: the ground truth as JSON lines (which item on which shelf, when).
- `measure`: CPU and memory of the sim and the cloud at N stores (docs/demo.md).
"""

from simulators.scenario.model import Scenario, ScenarioError, default_scenario, load_scenario

__all__ = ["Scenario", "ScenarioError", "default_scenario", "load_scenario"]
