"""Thin Pulumi ComponentResources over the pure core in mailhost/."""
