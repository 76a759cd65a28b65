"""The lab's MTA-STS policy host: `https://mta-sts.<domain>/.well-known/mta-sts.txt` for several domains.

One HTTPS server (a certificate from the lab CA that names every `mta-sts.<domain>` it serves) answers by the
Host header, as a receiver's policy host does (RFC 8461 section 3.3): the policy text of `<domain>` is the file
`<policies>/<domain>.txt`, read at each request, so a test changes a policy by writing its file.  Anything
else gets 404.  One JSON line per request goes to --log: which host asked for, and the status sent.

    python -m mailhost.lab.mtasts --listen ADDR [--listen ADDR6] --cert C --key K --policies DIR --log FILE
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mailhost.lab.tlscert import context_from_files

POLICY_PATH = "/.well-known/mta-sts.txt"
_HOST = re.compile(r"mta-sts\.([a-z0-9.-]{1,240})(?::443)?")


def policy(mode: str, mx: list[str], max_age: int = 86400) -> str:
    """An MTA-STS policy file (RFC 8461 section 3.2), CRLF line ends as the RFC's example has them."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"


def txt(policy_id: str) -> str:
    """The `_mta-sts.<domain>` TXT record's text that announces a policy with this id."""
    return f"v=STSv1; id={policy_id}"


def handler(policies: Path, log: Path) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()

    class Policy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            match = _HOST.fullmatch((self.headers.get("Host") or "").lower())
            path = policies / f"{match.group(1)}.txt" if match else None
            if self.path == POLICY_PATH and path is not None and path.is_file():
                body, code = path.read_bytes(), 200
            else:
                body, code = b"not found\n", 404
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            with lock, log.open("a") as out:
                out.write(json.dumps({"host": match.group(1) if match else None, "path": self.path[:200],
                                      "status": code}) + "\n")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Policy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", action="append", required=True)
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--policies", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args(argv)
    context = context_from_files(args.cert, args.key)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    servers = []
    for address in args.listen:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        server_class = type("Server", (ThreadingHTTPServer,), {"address_family": family})
        server = server_class((address, args.port), handler(args.policies, args.log))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        servers.append(server)
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
