"""The comparison report: teacher vs distilled vs scratch twin (metrics, sizes, latency, curves)."""
