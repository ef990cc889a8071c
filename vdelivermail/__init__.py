"""vdelivermail: delivery for vpopmail virtual domains from .qmail-default."""
