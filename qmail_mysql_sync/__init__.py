"""qmail-mysql-sync: render qmail-mysql tables into stock qmail files."""
