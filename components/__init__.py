"""Thin Pulumi ComponentResources over the pure core in mailhost/."""

from collections.abc import Callable

import pulumi

from mailhost.settings.config import Host


def secret_str(value: pulumi.Output[str]) -> pulumi.Output[str]:
    """Output.secret with the type kept (its stub makes mypy infer Never for an Output[str])."""
    return pulumi.Output.secret(value)  # type: ignore[arg-type]


def renamed(host: Host, name_of: Callable[[Host], str],
            opts: pulumi.ResourceOptions | None = None) -> pulumi.ResourceOptions:
    """`opts` plus, for a renamed host (hosts[].previousName), an alias to the name the same resource had
    under the old name: the engine then moves the old resource's state to it and updates it in place."""
    base = opts or pulumi.ResourceOptions()
    previous = host.previous()
    if previous is None:
        return base
    alias: list[pulumi.Input[str] | pulumi.Alias] = [pulumi.Alias(name=name_of(previous))]
    return pulumi.ResourceOptions.merge(base, pulumi.ResourceOptions(aliases=alias))
