"""Load generator: one store's real traffic, recorded once, replayed as N stores.

- `recording`: the recording file (JSON lines) and the message templates made from it.
- `record`: run one simulated store (the real edge daemon, simulated devices) against a
  broker and record what it publishes, with a recorder that plays the cloud's commit marks.
- `replay`: one process holding many store connections (one MQTT connection per store, as
  in reality): status and birth on connect, the recorded traffic on a per-store phase with
  gap-free sequences per stream, commit marks read back for publish -> commit latency.
- `fleet`: several replay processes for N stores, and their results added up.
"""
