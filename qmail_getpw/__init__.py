"""qmail-getpw: the local-user lookup qmail-lspawn runs, with qmail-mysql's mailbox table."""
