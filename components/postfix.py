"""Postfix + OpenDKIM config of one host, pushed over SSH by files/scripts/apply.sh.

The payload (all files, secrets included) travels on stdin as a Pulumi secret.  The
command runs the script, followed by the non-secret files as shell comment lines: so
`pulumi preview --diff` shows the config diff readably as a change of `create`/`update`,
which pulumi-command updates in place.  Not through `triggers`: its SDK registers every
Command with replace_on_changes=["triggers[*]"] (pulumi-command 1.2.1,
sdk/python/pulumi_command/remote/command.py; upstream #855), so a config kept there
would replace the push (teardown, then apply) on every change, and in production,
where the push is protected, refuse the whole `up`.  An unchanged config gives no
diff, hence no remote command.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

import pulumi
import pulumi_command as command

from mailhost.publish import bundle, render
from mailhost.settings.config import Host, Settings

from . import renamed, secret_str
from .host import JiraHost

SSH_DIAL_ATTEMPTS = 40  # × per-dial timeout: a fresh EC2 instance needs a minute or two for sshd
SSH_DIAL_TIMEOUT = 15


def apply_command(readable: str = "") -> str:
    """The script as one argument, then (for the preview diff) the readable config as comment lines."""
    command = f"bash -c {shlex.quote(render.script('apply.sh'))} jira-mailhost-apply"
    return f"{command}\n{readable}" if readable else command


def teardown_command(settings: Settings, host: Host, stack: str) -> str:
    return (f"MAILHOST_PUSH={shlex.quote(render.push_id(stack, host))} MAILHOST_DRAIN_SECONDS={settings.drain_seconds} "
            f"bash -c {shlex.quote(render.script('teardown.sh'))} jira-mailhost-teardown")


def readable_config(files: list[bundle.RenderedFile]) -> str:
    """Every file as shell comment lines: the non-secret ones whole, the secret ones by path only.

    Each line the shell could end (splitlines splits on more than newline) gets its own '#'."""
    lines = [f"# jira-mailhost config {bundle.public_digest(files)}"]
    for f in files:
        lines.append(f"# ==> {f.path}" + (" (secret: not shown)" if f.secret else
                                          f" (jira-mailhost's own code, sha256 {f.digest})" if f.code else ""))
        if not f.secret and not f.code:
            lines += [f"#   {line}".rstrip() for line in f.content.splitlines()]
    return "\n".join(lines)


class PostfixConfig(pulumi.ComponentResource):
    push: command.remote.Command

    def __init__(self, settings: Settings, host: Host, target: JiraHost, ssh_private_key: pulumi.Input[str],
                 dkim_private_key_pem: pulumi.Output[str], relay_password: pulumi.Output[str] | None,
                 after: Sequence[pulumi.Resource] = (), opts: pulumi.ResourceOptions | None = None):
        super().__init__("jira-mailhost:index:Postfix", host.name, None, renamed(host, lambda h: h.name, opts))
        stack = pulumi.get_stack()
        # Rendered with placeholders: every non-secret byte is known at preview time.
        public_files = render.render_host(settings, host, render.PLACEHOLDERS, stack)
        secrets = pulumi.Output.all(dkim_private_key_pem, relay_password)
        packed: pulumi.Output[str] = secrets.apply(
            lambda s: bundle.pack(render.render_host(settings, host, render.HostSecrets(s[0], s[1]), stack))
        )
        payload = secret_str(packed)
        readable = readable_config(public_files)
        if settings.push_serial:  # a new serial is a changed command: `up` pushes again, in place
            readable = f"# push serial {settings.push_serial} (stack setting pushSerial)\n{readable}"
        # A replaced EC2 instance keeps its Elastic IP, so nothing else in the push changes: name the
        # instance in the command, and a new one is an update that configures it.
        apply: pulumi.Input[str] = apply_command(readable) if target.instance_id is None else \
            target.instance_id.apply(lambda iid: apply_command(f"# host instance {iid}\n{readable}"))
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
            create=apply,
            update=apply,  # an update re-runs apply in place; never a replace (= teardown)
            delete=teardown_command(settings, host, stack),
            stdin=payload,
            # An adopted host that moves to a new address is another machine: the changed trigger replaces
            # the push, so teardown runs on the old address (drain, original config back, keys and password
            # gone) before apply runs on the new one.  An EC2 host's address is its Elastic IP: it never moves.
            triggers=[host.existing.ipv4] if host.existing else None,
            add_previous_output_in_env=False,
            opts=renamed(host, lambda h: f"{h.name}-push", pulumi.ResourceOptions(
                parent=self,
                protect=settings.production,
                delete_before_replace=True,  # a new host: drain the old one before configuring the new
                additional_secret_outputs=["stdin"],
                depends_on=list(after),  # DNS first: never sign or send with what is not yet published
            )),
        )
        self.digest = bundle.public_digest(public_files)
        self.register_outputs({"configDigest": self.digest})
