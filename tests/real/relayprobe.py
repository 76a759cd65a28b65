"""An outside SMTP client and a connection sink, run inside a lab namespace with `ip netns exec`.

The relay test must speak from another host on the bridge, not from the root namespace
(whose link is trusted differently) nor from the Jira host itself, so this file runs as a
script there.  Standard library only; results go to stdout as JSON.

    relayprobe.py attempts     stdin: a JSON list of attempts; stdout: one JSON list of results
    relayprobe.py sink PORT..  listens on every address; prints "ready", then one JSON line per connection
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

TIMEOUT = 20.0  # smtpd looks up the client's PTR through a resolver that never answers
MESSAGE = "Subject: relay test\r\n\r\nIf you can read this, the host is an open relay.\r\n"


def attempt(spec: dict[str, Any]) -> dict[str, Any]:
    """One session: connect, greet, MAIL, RCPT with the exact paths given; DATA only if RCPT was accepted."""
    codes: dict[str, Any] = {}
    result: dict[str, Any] = {**spec, "codes": codes, "error": None}
    smtp = smtplib.SMTP(timeout=TIMEOUT)
    try:
        codes["connect"], _ = smtp.connect(spec["address"], spec["port"])
        verb, name = spec["greeting"].split(" ", 1)
        codes[verb], _ = smtp.docmd(verb, name)
        for step, argument in (("mail", f"FROM:{spec['mail']}"), ("rcpt", f"TO:{spec['rcpt']}")):
            codes[step], reply = smtp.docmd(step.upper(), argument)
            result["reply"] = reply.decode(errors="replace")
            if codes[step] >= 400:
                break
        if 200 <= codes.get("rcpt", 0) < 300:
            try:
                codes["data"], reply = smtp.data(MESSAGE)
                result["reply"] = reply.decode(errors="replace")
            except smtplib.SMTPDataError as error:
                codes["data"] = error.smtp_code
                result["reply"] = error.smtp_error.decode(errors="replace") if isinstance(error.smtp_error, bytes) \
                    else error.smtp_error
        smtp.quit()
    except ConnectionRefusedError:
        result["error"] = "connection refused"
    except (OSError, smtplib.SMTPException) as error:
        result["error"] = f"{type(error).__name__}: {error}"
    finally:
        smtp.close()
    return result


def run_attempts() -> None:
    specs = json.load(sys.stdin)
    with ThreadPoolExecutor(max_workers=32) as pool:  # each session waits ~3 s for smtpd's PTR lookup; anvil allows 50
        print(json.dumps(list(pool.map(attempt, specs))))


async def sink(ports: list[int]) -> None:
    """Anything the Jira host sends on (a relayed message, a bounce) would have to connect here."""

    async def seen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        print(json.dumps({"port": writer.get_extra_info("sockname")[1], "peer": writer.get_extra_info("peername")[0]}),
              flush=True)
        writer.write(b"554 5.7.1 relay test sink: nothing is accepted here\r\n")
        await writer.drain()
        writer.close()

    servers = [await asyncio.start_server(seen, host=None, port=port) for port in ports]
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    if sys.argv[1:2] == ["attempts"]:
        run_attempts()
    elif sys.argv[1:2] == ["sink"]:
        asyncio.run(sink([int(port) for port in sys.argv[2:]]))
    else:
        sys.exit(__doc__)
