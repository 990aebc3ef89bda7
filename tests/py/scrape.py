#!/usr/bin/env python3
"""Scrapes a podbay /metrics endpoint and parses it with Prometheus' own Python parsers
(Debian's python3-prometheus-client), independent of podbay.

usage: scrape.py URL [openmetrics]

Without `openmetrics` it asks for the Prometheus text format and parses it with
prometheus_client.parser; with it, it asks for OpenMetrics and parses with the strict
prometheus_client.openmetrics.parser. It prints one JSON list of samples:
[name, {labels}, value], and the content type the server answered with.
"""
import json
import sys
import urllib.request

from prometheus_client import parser
from prometheus_client.openmetrics import parser as om_parser


def main():
    url = sys.argv[1]
    openmetrics = len(sys.argv) > 2 and sys.argv[2] == "openmetrics"
    req = urllib.request.Request(url)
    if openmetrics:
        req.add_header("Accept", "application/openmetrics-text; version=1.0.0")
    with urllib.request.urlopen(req, timeout=30) as resp:
        kind = resp.headers.get("Content-Type", "")
        text = resp.read().decode("utf-8")
    parse = om_parser.text_string_to_metric_families if openmetrics \
        else parser.text_string_to_metric_families
    samples = []
    for family in parse(text):
        for s in family.samples:
            samples.append([s.name, s.labels, s.value])
    print(json.dumps({"contentType": kind, "samples": samples}))


if __name__ == "__main__":
    main()
