#!/usr/bin/env python3
"""Parses an SVG file with Python's XML parser (independent of podbay) and prints a JSON
object: the root tag, every <text>'s content in document order, and the number of
elements per class attribute. A file that is not well-formed XML fails here.

usage: svgtext.py FILE
"""
import collections
import json
import sys
import xml.etree.ElementTree as ET

NS = "{http://www.w3.org/2000/svg}"


def main():
    root = ET.parse(sys.argv[1]).getroot()
    texts = ["".join(t.itertext()) for t in root.iter(NS + "text")]
    classes = collections.Counter(e.get("class") for e in root.iter() if e.get("class"))
    print(json.dumps({"root": root.tag, "texts": texts, "classes": classes}))


if __name__ == "__main__":
    main()
