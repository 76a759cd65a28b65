"""The lab's model of the Pulumi engine: provider facts (data), the plan (pure), and how it is shown."""
