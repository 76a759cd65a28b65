"""The lab's OAuth2 token introspection endpoint, for Dovecot's oauth2 passdb (XOAUTH2 logins).

What Microsoft's or Google's token endpoint does for their IMAP servers: Dovecot asks
`GET /introspect?access_token=TOKEN` and gets the token's owner back ({"email": …, "active": true}),
or an inactive answer for a token it does not know.  Tokens come from a 0600 file (`token address` lines).
"""

from __future__ import annotations

import argparse
import hmac
import json
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def owners(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        token, _, address = line.partition(" ")
        if token and address:
            found[token] = address
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=Path, required=True)
    args = parser.parse_args(argv)
    known = owners(args.tokens)

    class Introspect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            token = (query.get("access_token") or [""])[0]
            owner = next((a for t, a in known.items() if hmac.compare_digest(t, token)), None)
            body = json.dumps({"active": True, "email": owner} if owner else {"active": False}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:  # tokens are in the request line: never logged
            return

    ThreadingHTTPServer((args.listen, args.port), Introspect).serve_forever()


if __name__ == "__main__":
    main()
