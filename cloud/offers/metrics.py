"""The offers domain's Prometheus metrics, read from the engine's and senders' counters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from cloud.offers.domain import OffersDomain


class OffersCollector(Collector):
    def __init__(self, domain: OffersDomain) -> None:
        self.domain = domain

    def collect(self) -> Iterator[Metric]:
        engine = self.domain.engine
        decisions = CounterMetricFamily(
            "storegate_offer_decisions",
            "offer decisions made in ingest batches (a rolled-back batch counts again)",
            labels=["status", "reason"],
        )
        for (status, reason), count in sorted(engine.decisions.items()):
            decisions.add_metric([status, reason], count)
        yield decisions
        arbitration = CounterMetricFamily(
            "storegate_offer_arbitration",
            "presence events of opted-in shoppers by arbitration outcome",
            labels=["outcome"],
        )
        for why, count in sorted(engine.arbitration.items()):
            arbitration.add_metric([why], count)
        yield arbitration
        webhook = self.domain.webhook
        if webhook is not None:
            sent = CounterMetricFamily(
                "storegate_offer_webhooks", "webhook deliveries by outcome", labels=["outcome"]
            )
            sent.add_metric(["done"], webhook.sent)
            sent.add_metric(["failed"], webhook.failed)
            yield sent
        listener = self.domain.listener
        if listener is not None:
            yield GaugeMetricFamily(
                "storegate_offer_delivery_confirmations_dropped",
                "delivered confirmations lost to a full hand-off queue (the offers were sent)",
                value=listener.dropped,
            )
