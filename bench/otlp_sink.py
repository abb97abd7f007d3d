"""bench/otlp_sink: an OTLP/HTTP receiver that reads each export and answers 200 (an empty
ExportTraceServiceResponse), so the traced contenders of bench/ingest pay the exporter's real
work (encoding, the POST) and nothing of a collector's.

    python -m bench.otlp_sink PORT
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


def main() -> None:
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), _Sink).serve_forever()


if __name__ == "__main__":
    main()
