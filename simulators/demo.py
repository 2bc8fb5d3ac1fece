"""`storegate demo`: everything on one machine, on embedded defaults.

Starts the embedded MQTT broker and shows the traffic on the storegate topic tree until
Ctrl-C. Later stages add the cloud, simulated stores and the dashboard to the same command.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from types import FrameType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.live import Live
from rich.table import Table

from protocols.topics import TOPIC_PREFIX, TopicError, parse_topic


def run_demo(*, port: int, duration: float | None, console: Console) -> int:
    from iotcore import Broker  # the sim extra

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    broker = Broker(port=port, listen="127.0.0.1", max_payload_size=1024 * 1024)
    try:
        with console.status(f"starting the embedded MQTT broker on 127.0.0.1:{port}"):
            try:
                broker.start()
            except OSError as exc:
                console.print(f"[red]cannot listen on port {port}: {exc}[/] (try --port)")
                return 1
        console.print(f"[green]✓[/] MQTT broker on [bold]mqtt://127.0.0.1:{port}[/]")
        console.print(
            "  publishing stores connect here; traffic on"
            f" [bold]{TOPIC_PREFIX}/#[/] is counted below. Ctrl-C stops everything."
        )
        counts: Counter[str] = Counter()
        monitor = _monitor(port, counts)
        started = time.monotonic()
        with Live(_table(counts, 0.0), console=console, refresh_per_second=2) as live:
            while not stop.wait(0.5):
                elapsed = time.monotonic() - started
                live.update(_table(counts, elapsed))
                if duration is not None and elapsed >= duration:
                    break
        monitor.disconnect()
        monitor.loop_stop()
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print("[green]✓[/] demo stopped cleanly")
    return 0


def _monitor(port: int, counts: Counter[str]) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="storegate-demo-monitor")

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            counts[parse_topic(msg.topic).channel.value] += 1
        except TopicError:
            counts["(not storegate)"] += 1

    def on_connect(client: mqtt.Client, *args: object) -> None:
        client.subscribe([(f"{TOPIC_PREFIX}/#", 1)])

    client.on_message = on_message
    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _table(counts: Counter[str], elapsed: float) -> Table:
    table = Table(title=f"storegate demo: {elapsed:5.0f} s", title_justify="left")
    table.add_column("channel")
    table.add_column("messages", justify="right")
    for channel, count in sorted(counts.items()):
        table.add_row(channel, str(count))
    if not counts:
        table.add_row("(waiting for edge nodes)", "0")
    return table
