"""Thin Pulumi ComponentResources over the pure core in mailhost/."""

import pulumi


def secret_str(value: pulumi.Output[str]) -> pulumi.Output[str]:
    """Output.secret with the type kept (its stub makes mypy infer Never for an Output[str])."""
    return pulumi.Output.secret(value)  # type: ignore[arg-type]
