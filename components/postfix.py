"""Postfix + OpenDKIM config of one host, pushed over SSH by files/scripts/apply.sh.

The payload (all files, secrets included) travels on stdin as a Pulumi secret; the
command line holds only the script.  Triggers carry the non-secret files as text, so
`pulumi preview` shows the config diff readably, and an unchanged config gives no
diff, hence no remote command.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

import pulumi
import pulumi_command as command

from mailhost import bundle, render
from mailhost.config import Host, Settings

from . import secret_str
from .host import JiraHost

SSH_DIAL_ATTEMPTS = 40  # × per-dial timeout: a fresh EC2 instance needs a minute or two for sshd
SSH_DIAL_TIMEOUT = 15


def apply_command() -> str:
    return f"bash -c {shlex.quote(render.script('apply.sh'))} jira-mailhost-apply"


def teardown_command(settings: Settings) -> str:
    return (f"MAILHOST_DRAIN_SECONDS={settings.drain_seconds} "
            f"bash -c {shlex.quote(render.script('teardown.sh'))} jira-mailhost-teardown")


def readable_config(files: list[bundle.RenderedFile]) -> dict[str, str]:
    """Non-secret files by path, for the preview diff; secret ones by name only."""
    return {f.path: ("(secret)" if f.secret else f.content) for f in files}


class PostfixConfig(pulumi.ComponentResource):
    push: command.remote.Command

    def __init__(self, settings: Settings, host: Host, target: JiraHost, ssh_private_key: pulumi.Input[str],
                 dkim_private_key_pem: pulumi.Output[str], relay_password: pulumi.Output[str] | None,
                 after: Sequence[pulumi.Resource] = (), opts: pulumi.ResourceOptions | None = None):
        super().__init__("jira-mailhost:index:Postfix", host.name, None, opts)
        stack = pulumi.get_stack()
        # Rendered with placeholders: every non-secret byte is known at preview time.
        public_files = render.render_host(settings, host, render.PLACEHOLDERS, stack)
        secrets = pulumi.Output.all(dkim_private_key_pem, relay_password)
        packed: pulumi.Output[str] = secrets.apply(
            lambda s: bundle.pack(render.render_host(settings, host, render.HostSecrets(s[0], s[1]), stack))
        )
        payload = secret_str(packed)
        connection = command.remote.ConnectionArgsDict(
            host=target.ipv4,
            port=target.port,
            user=target.user,
            private_key=pulumi.Output.secret(ssh_private_key),
            host_key=target.host_key,
            dial_error_limit=SSH_DIAL_ATTEMPTS,
            per_dial_timeout=SSH_DIAL_TIMEOUT,
        )
        self.push = command.remote.Command(
            f"{host.name}-push",
            connection=connection,
            create=apply_command(),
            update=apply_command(),  # an update re-runs apply in place; never a replace (= teardown)
            delete=teardown_command(settings),
            stdin=payload,
            triggers=[bundle.public_digest(public_files), readable_config(public_files)],
            add_previous_output_in_env=False,
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=settings.production,
                delete_before_replace=True,  # a new host: drain the old one before configuring the new
                additional_secret_outputs=["stdin"],
                depends_on=list(after),  # DNS first: never sign or send with what is not yet published
            ),
        )
        self.digest = bundle.public_digest(public_files)
        self.register_outputs({"configDigest": self.digest})
