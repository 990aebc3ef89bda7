#!/usr/bin/env python3
"""A Kubernetes remotecommand client over WebSocket (what crictl --transport websocket
and the API server speak), on Debian's websocket-client (python3-websocket), independent
of podbay.

usage: wsexec.py URL PROTOCOL [INPUT_FILE]

It connects with the given subprotocol, sends INPUT_FILE on channel 0 (stdin; with
v5.channel.k8s.io it then closes the channel with [255, 0]), and collects channels 1
(stdout), 2 (stderr) and 3 (error) until the server closes. It prints one JSON object:
the protocol the server chose, stdout and stderr in base64, and the error channel's text.
"""
import base64
import json
import sys

import websocket


def main():
    url = sys.argv[1].replace("http://", "ws://", 1)
    proto = sys.argv[2]
    data = open(sys.argv[3], "rb").read() if len(sys.argv) > 3 else b""
    text = "base64" in proto
    ws = websocket.create_connection(url, subprotocols=[proto], timeout=30)

    def send(channel, payload):
        if text:
            ws.send(str(channel) + base64.b64encode(payload).decode())
        else:
            ws.send_binary(bytes([channel]) + payload)

    for i in range(0, len(data), 32 * 1024):
        send(0, data[i:i + 32 * 1024])
    if proto.startswith("v5."):
        ws.send_binary(bytes([255, 0]))
    out = {1: b"", 2: b"", 3: b""}
    while True:
        try:
            msg = ws.recv()
        except websocket.WebSocketConnectionClosedException:
            break
        if not msg:
            if not ws.connected:
                break
            continue
        if isinstance(msg, str):
            channel, payload = int(msg[0]), base64.b64decode(msg[1:])
        else:
            channel, payload = msg[0], msg[1:]
        if channel in out:
            out[channel] += payload
    print(json.dumps({
        "protocol": ws.getsubprotocol(),
        "stdout": base64.b64encode(out[1]).decode(),
        "stderr": base64.b64encode(out[2]).decode(),
        "error": out[3].decode(errors="replace"),
    }))


if __name__ == "__main__":
    main()
