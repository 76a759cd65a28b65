"""Everything the stack will render and publish, built once with placeholders before any resource exists.

The settings model checks each value alone; this builds what the values add up to (each
host's files through the allowlist, every DNS name and TXT value) so that a combination
that cannot be published fails `pulumi preview` with a keyed message, never `pulumi up`
halfway with a traceback.
"""

from __future__ import annotations

from mailhost.publish import plan, render
from mailhost.publish.allowlist import RenderRefused
from mailhost.records import dkim, dnstext, grammar
from mailhost.settings.config import Settings

PLACEHOLDER_P = "A" * 392  # the length of a 2048-bit RSA key's p= value


def problems(settings: Settings) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for index, retired in enumerate(settings.dkim_retired):
        for host in settings.hosts:
            name = settings.selector(host, retired.selector)
            if len(name) > 63 or len(dkim.record_name(name, settings.domain)) > 253:
                out.append((f"dkimRetired[{index}].selector", f"'{name}' does not fit in DNS with host "
                            f"'{host.name}'; it cannot have been published, so remove it"))
    for index, host in enumerate(settings.hosts):
        selector = settings.selector(host)
        if len(selector) > 63:
            out.append(("dkimSelector", f"'{selector}' (selector + '-' + host name of hosts[{index}]) is longer "
                        "than a DNS label (63); shorten dkimSelector or the host name"))
            continue
        for key, name in (((f"hosts[{index}].name", settings.fqdn(host)),
                           ("dkimSelector", dkim.record_name(selector, settings.domain)))):
            try:
                grammar.fqdn(name, "a record name", service_labels=True)
            except ValueError:
                out.append((key, f"'{name}' is longer than DNS allows (253); shorten it or the domain"))
        try:
            render.render_host(settings, host, render.PLACEHOLDERS)
        except RenderRefused as error:
            out.append((f"hosts[{index}]", f"the rendered config was refused ({error}); no file was pushed"))
    addresses = plan.placeholder_addresses(settings)
    try:
        records = [plan.spf_record(settings, addresses), plan.dmarc_record(settings)]
        for host in settings.hosts:
            records += plan.host_records(settings, host, addresses[host.name])
            records.append(plan.dkim_record(settings, host, settings.dkim_selector, PLACEHOLDER_P))
        for record in records:
            if record.type == "TXT":
                dnstext.split_txt(record.value)
    except ValueError as error:
        out.append(("spfExtra", str(error)))
    return out
