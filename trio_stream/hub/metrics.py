"""The hub's figures: the ``/api/streams/metrics`` JSON (the Executor Streamer design's
``StreamMetrics`` and more) and ``/metrics`` for Prometheus."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .design import CLIENT_TYPES

if TYPE_CHECKING:
    from .context import Hub


def memory_bytes() -> int:
    """The process's resident memory (its peak where the current value is unknown)."""
    try:
        with open("/proc/self/statm", "rb") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def metrics_json(h: Hub) -> dict[str, Any]:
    """``GET /api/streams/metrics``: streams, clients by type, rates, memory, errors.

    The design's ``StreamMetrics`` fields come first (``clientsByType`` keyed by its
    ``ClientType``); tstream's own follow (``clientsByTransport`` keyed ``websocket``,
    ``sse``, ``poll``).
    """
    broker = h.broker
    held = broker.streams_in_memory()
    live = [s for s in held if not s.finished]
    by_kind = {kind: n for kind, n in sorted(broker.clients_by_kind.items()) if n}
    by_kind["poll"] = h.polls
    by_type = dict.fromkeys(CLIENT_TYPES.values(), 0)
    for kind, n in by_kind.items():
        by_type[CLIENT_TYPES[kind]] += n
    memory = memory_bytes()
    uptime = time.time() - h.started
    rate = broker.events_per_second()
    average = broker.bytes_total / broker.events_total if broker.events_total else 0
    return {
        "totalStreams": len(held),
        "activeStreams": len(live),
        "totalClients": broker.connections + h.polls,
        "eventsPerSecond": rate,
        "averageEventSize": average,
        "memoryUsage": memory,
        "errorRate": h.error_rate,
        "uptime": uptime,
        "clientsByType": by_type,
        "streams": len(held),
        "clients": broker.connections,
        "clientsByTransport": by_kind,
        "eventsTotal": broker.events_total,
        "slowConsumers": broker.slow_consumers,
        "memoryBytes": memory,
        "requests": h.requests_total,
        "rateLimited": h.requests.refused + h.connects.refused + h.publishers.refused,
        "epoch": broker.store.epoch,
    }


def _line(name: str, value: float, labels: dict[str, str] | None = None) -> str:
    if labels:
        inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        return f"{name}{{{inner}}} {value:g}"
    return f"{name} {value:g}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus(h: Hub) -> str:
    """``GET /metrics`` in the Prometheus text exposition format (version 0.0.4)."""
    data = metrics_json(h)
    out: list[str] = []

    def metric(
        name: str,
        kind: str,
        help_text: str,
        value: float | None = None,
        *,
        label: str = "",
        values: Iterable[tuple[Any, float]] = (),
    ) -> None:
        """One metric: its single ``value``, or one sample per ``label`` value."""
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        if value is not None:
            out.append(_line(name, value))
        out.extend(_line(name, n, {label: str(key)}) for key, n in values)

    metric("tstream_hub_streams", "gauge", "Streams the hub holds.", data["streams"])
    metric("tstream_hub_active_streams", "gauge", "Live streams.", data["activeStreams"])
    metric(
        "tstream_hub_clients",
        "gauge",
        "Connected clients by transport.",
        label="type",
        values=data["clientsByTransport"].items(),
    )
    metric("tstream_hub_events_total", "counter", "Events fanned out.", data["eventsTotal"])
    metric(
        "tstream_hub_event_bytes_total",
        "counter",
        "Bytes of events fanned out.",
        h.broker.bytes_total,
    )
    metric(
        "tstream_hub_slow_consumers_total",
        "counter",
        "Clients cut as slow consumers.",
        data["slowConsumers"],
    )
    metric(
        "tstream_hub_responses_total",
        "counter",
        "HTTP answers by status.",
        label="status",
        values=sorted(h.statuses.items()),
    )
    metric(
        "tstream_hub_rate_limited_total",
        "counter",
        "Requests refused by rate limits.",
        data["rateLimited"],
    )
    metric(
        "tstream_hub_memory_bytes",
        "gauge",
        "Resident memory of the hub process.",
        data["memoryBytes"],
    )
    metric("tstream_hub_uptime_seconds", "gauge", "Seconds since the hub started.", data["uptime"])
    return "\n".join(out) + "\n"
