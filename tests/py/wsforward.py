#!/usr/bin/env python3
"""A Kubernetes port-forward client over WebSocket (the API server's and crictl's
websocket transport), on Debian's websocket-client (python3-websocket), independent of
podbay.

usage: wsforward.py URL PROTOCOL INPUT_FILE

URL carries the ports (`?port=8080&port=9090`); PROTOCOL is the subprotocol to offer, or
`none` to offer none. Port i's data is channel 2i and its errors channel 2i+1; the server
first writes the port (u16, little endian) on each. The client reads those, sends
INPUT_FILE on channel 0, and collects every channel until the server closes. It prints one
JSON object: the protocol chosen, the port prefix seen per channel, each channel's data in
base64 (without the prefix), or the HTTP status when the upgrade is refused.
"""
import base64
import json
import struct
import sys

import websocket


def main():
    url = sys.argv[1].replace("http://", "ws://", 1)
    proto = sys.argv[2]
    data = open(sys.argv[3], "rb").read()
    text = "base64" in proto
    try:
        ws = websocket.create_connection(
            url, subprotocols=None if proto == "none" else [proto], timeout=30)
    except websocket.WebSocketBadStatusException as e:
        print(json.dumps({"status": e.status_code}))
        return
    prefixes, out, sent = {}, {}, False
    while True:
        try:
            msg = ws.recv()
        except websocket.WebSocketConnectionClosedException:
            break
        if not msg:
            break
        if text:
            ch, payload = int(msg[0]), base64.b64decode(msg[1:])
        else:
            ch, payload = msg[0], msg[1:]
        if str(ch) not in prefixes:
            prefixes[str(ch)] = struct.unpack("<H", payload[:2])[0]
            payload = payload[2:]
        out[str(ch)] = out.get(str(ch), b"") + payload
        if not sent and "0" in prefixes and "1" in prefixes:
            frame = bytes([0]) + data
            if text:
                ws.send("0" + base64.b64encode(data).decode())
            else:
                ws.send_binary(frame)
            sent = True
    print(json.dumps({
        "protocol": ws.subprotocol,
        "prefixes": prefixes,
        "data": {k: base64.b64encode(v).decode() for k, v in out.items()},
    }))


if __name__ == "__main__":
    main()
