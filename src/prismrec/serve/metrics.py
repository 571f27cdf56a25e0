"""Prometheus metrics of the service (text exposition format), hand-rolled: request counts by
route, method and status, and a latency histogram by route."""
from __future__ import annotations

import threading
import time
from collections import defaultdict

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Thread-safe counters and histograms; ``render()`` gives the ``/metrics`` text."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.started = time.time()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1
            b = self.buckets[route]
            for j, edge in enumerate(BUCKETS):
                if seconds <= edge:
                    b[j] += 1
                    break
            self.sums[route] += seconds
            self.counts[route] += 1

    def render(self, extra: dict[str, float] | None = None) -> str:
        with self._lock:
            lines = ["# HELP prismrec_requests_total HTTP requests by route, method and status.",
                     "# TYPE prismrec_requests_total counter"]
            for (method, route, status), n in sorted(self.requests.items()):
                lines.append(f'prismrec_requests_total{{method="{method}",route="{_esc(route)}",'
                             f'status="{status}"}} {n}')
            lines += ["# HELP prismrec_request_duration_seconds Request latency by route.",
                      "# TYPE prismrec_request_duration_seconds histogram"]
            for route in sorted(self.counts):
                cum, r = 0, _esc(route)
                for edge, n in zip(BUCKETS, self.buckets[route]):
                    cum += n
                    lines.append(f'prismrec_request_duration_seconds_bucket{{route="{r}",le="{edge}"}} {cum}')
                lines.append(f'prismrec_request_duration_seconds_bucket{{route="{r}",le="+Inf"}} {self.counts[route]}')
                lines.append(f'prismrec_request_duration_seconds_sum{{route="{r}"}} {self.sums[route]:.6f}')
                lines.append(f'prismrec_request_duration_seconds_count{{route="{r}"}} {self.counts[route]}')
        for name, value in (extra or {}).items():
            lines += [f"# TYPE {name} gauge", f"{name} {value}"]
        return "\n".join(lines) + "\n"


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request; the route label is the matched path
    template (``/recommend``), never the raw URL, so label cardinality stays bounded."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope.get("method", "?"), path, status[0], time.perf_counter() - start)
