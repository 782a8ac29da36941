#!/usr/bin/python3
"""Parses a /metrics answer (OpenMetrics text, on stdin) with the Prometheus project's own
parser (python3-prometheus-client), which refuses text that breaks the format, then lints it:

- every family has HELP and a known type;
- counters' samples end in _total, and nothing else does;
- a family with a unit has a name ending in it, and only base units (seconds, bytes) are used;
- names that carry a unit word (seconds, bytes, milliseconds, ...) declare that unit;
- histograms have buckets ending at +Inf, cumulative, matching _count.

Prints one JSON object on stdout, {"families": {name: {"type", "unit", "samples":
[[sample name, labels, value], ...]}}}, for the test to compare scrapes; exits 1 with the
problems on stderr when the lint fails.
"""
import json
import math
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

BASE_UNITS = {"seconds", "bytes"}
UNIT_WORDS = {"seconds", "bytes", "milliseconds", "microseconds", "nanoseconds", "kilobytes", "megabytes", "minutes", "hours"}


def lint(text):
    problems = []
    families = {}
    for family in text_string_to_metric_families(text):
        name = family.name
        if not family.documentation:
            problems.append(f"{name}: no HELP")
        if family.type not in {"counter", "gauge", "histogram", "summary", "info", "stateset", "gaugehistogram"}:
            problems.append(f"{name}: type {family.type} (untyped or unknown)")
        words = set(name.split("_"))
        if family.unit:
            if family.unit not in BASE_UNITS:
                problems.append(f"{name}: unit {family.unit} is not a base unit")
            if not name.endswith("_" + family.unit):
                problems.append(f"{name}: unit {family.unit} but the name does not end in it")
        elif words & UNIT_WORDS:
            problems.append(f"{name}: the name says {words & UNIT_WORDS} but declares no unit")
        samples = []
        for sample in family.samples:
            if family.type == "counter":
                if not (sample.name.endswith("_total") or sample.name.endswith("_created")):
                    problems.append(f"{sample.name}: a counter sample without _total")
            elif sample.name.endswith("_total"):
                problems.append(f"{sample.name}: _total on a {family.type}")
            value = sample.value
            if isinstance(value, float) and (math.isnan(value)):
                problems.append(f"{sample.name}: NaN")
            samples.append([sample.name, dict(sample.labels), value])
        if family.type == "histogram":
            series = {}
            for sample_name, labels, value in samples:
                key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                entry = series.setdefault(key, {"buckets": [], "count": None})
                if sample_name.endswith("_bucket"):
                    entry["buckets"].append((float(labels["le"]), value))
                elif sample_name.endswith("_count"):
                    entry["count"] = value
            for key, entry in series.items():
                buckets = entry["buckets"]
                if not buckets or not math.isinf(buckets[-1][0]):
                    problems.append(f"{name}{dict(key)}: buckets do not end at +Inf")
                    continue
                if any(b[1] > a[1] for b, a in zip(buckets, buckets[1:])):
                    problems.append(f"{name}{dict(key)}: buckets are not cumulative")
                if entry["count"] != buckets[-1][1]:
                    problems.append(f"{name}{dict(key)}: _count {entry['count']} != +Inf bucket {buckets[-1][1]}")
        families[name] = {"type": family.type, "unit": family.unit, "samples": samples}
    return families, problems


def main():
    families, problems = lint(sys.stdin.read())
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    json.dump({"families": families}, sys.stdout)


if __name__ == "__main__":
    main()
