#!/usr/bin/env python3
"""A broken "edge" in front of a registry, for ci/e2e-pull.sh scenario c.

Usage:
  edge.py close ADDR PORT             accept TCP, then close at once: a layer-4 proxy whose
                                      backend is gone (a TCP probe sees it up, TLS fails)
  edge.py http503 ADDR PORT CERT KEY  TLS with the test certificate, every request gets 503
                                      (a TLS-terminating proxy with no healthy backend)

  edge.py files ADDR PORT CERT KEY DIR
                                      TLS, GET serves the files under DIR: the "blob CDN" that
                                      docker-registry's redirect middleware sends blob GETs to

Runs until it is killed; requests are logged to stderr. Standard library only.
"""

import http.server
import socket
import socketserver
import ssl
import sys


class Unavailable(http.server.BaseHTTPRequestHandler):
    """Answers every GET and HEAD with 503 Service Unavailable."""

    def do_GET(self):
        body = b"no healthy upstream\n"
        self.send_response(503)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()

    def log_message(self, fmt, *args):
        sys.stderr.write("edge503 %s %s\n" % (self.address_string(), fmt % args))
        sys.stderr.flush()


class Files(http.server.SimpleHTTPRequestHandler):
    """Serves a registry's storage directory read-only, one log line per request."""

    def log_message(self, fmt, *args):
        sys.stderr.write("cdn %s %s\n" % (self.address_string(), fmt % args))
        sys.stderr.flush()


class TlsServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """HTTP over TLS, one thread per connection; a failed handshake only ends that connection."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, cert, key, handler=Unavailable):
        super().__init__(addr, handler)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)

    def get_request(self):
        sock, peer = self.socket.accept()
        sock.settimeout(5)
        try:
            return self.ctx.wrap_socket(sock, server_side=True), peer
        except (ssl.SSLError, OSError):
            sock.close()
            raise


def serve_close(addr, port):
    """Accept every connection and close it at once, never reading a byte."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        conn.close()


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "close":
        serve_close(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 6 and sys.argv[1] == "http503":
        TlsServer((sys.argv[2], int(sys.argv[3])), sys.argv[4], sys.argv[5]).serve_forever()
    elif len(sys.argv) == 7 and sys.argv[1] == "files":
        root = sys.argv[6]

        def handler(*args, **kwargs):
            return Files(*args, directory=root, **kwargs)

        TlsServer(
            (sys.argv[2], int(sys.argv[3])), sys.argv[4], sys.argv[5], handler
        ).serve_forever()
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
