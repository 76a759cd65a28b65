"""Production updates only after a preview of the same settings.

`pulumi up` previews first, and the preview refuses a replace or delete of a protected resource before
any step runs.  `pulumi up --skip-preview` and the Automation API's `up` run the update alone: the engine
then meets the refusal only at that resource's own step (a replace) or in the delete phase, after other
steps ran, and can leave a running host signing with an unpublished key or missing from SPF.

So the program's preview run notes a digest of the stack's settings (secrets left out) in the user's
cache directory, and a production update whose settings no preview noted within the last hour stops
before it registers anything (a failed program makes the engine delete nothing).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mailhost.publish.stack import values_from_config
from mailhost.settings.config import SECRET_KEYS

VALID_SECONDS = 3600


def notes_dir() -> Path:
    """$XDG_CACHE_HOME/jira-mailhost/previewed (~/.cache when unset): per user, as `pulumi up` runs its
    preview and its update as that user on that machine."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "jira-mailhost" / "previewed"


def settings_digest(project: str, stack: str, values: Mapping[str, Any]) -> str:
    """Of every non-secret stack value: a secret rotated without a preview replaces nothing protected."""
    public = {k: v for k, v in values.items() if k not in SECRET_KEYS}
    text = json.dumps({"project": project, "stack": stack, "values": public}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def config_digest(project: str, stack: str, config: Mapping[str, str]) -> str:
    """The digest the program notes for this config (`project:key` → text, as Pulumi passes it)."""
    return settings_digest(project, stack, values_from_config(config))


def note_preview(digest: str, directory: Path | None = None) -> None:
    directory = directory or notes_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (directory / digest).write_text(f"{int(time.time())}\n")


def forget_preview(digest: str, directory: Path | None = None) -> None:
    """A preview the program stopped (a check that needs the state, like the EC2 login) does not count."""
    (directory or notes_dir()).joinpath(digest).unlink(missing_ok=True)


def was_previewed(digest: str, now: float | None = None, directory: Path | None = None) -> bool:
    note = (directory or notes_dir()) / digest
    try:
        noted = note.stat().st_mtime
    except OSError:
        return False
    return 0 <= (time.time() if now is None else now) - noted < VALID_SECONDS


def not_previewed_message(stack: str) -> str:
    return (f"stack '{stack}' is production, and no preview of these settings ran in the last hour on this "
            "machine (pulumi up --skip-preview, or the Automation API's up without preview). Without a preview "
            "a refused change to a protected resource stops only at its own step, after other steps ran. "
            "Run `pulumi up` (it previews first), or `pulumi preview` and then the update. Nothing was changed.")
