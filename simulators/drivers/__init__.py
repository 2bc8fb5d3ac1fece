"""The simulated devices as edge drivers (`sim-*`), each the production driver fed by a
simulator instead of hardware. pyproject.toml declares them as `storegate.drivers` entry
points; the edge finds them there and never imports this package itself."""
