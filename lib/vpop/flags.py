"""The pw_gid flag bits of a vpopmail user record (``vpopmail.h``).

A module of their own so that what only needs the bits (the login decision, the domain limits)
does not import the stores.
"""

NO_PASSWD_CHNG = 0x01
NO_POP = 0x02
NO_WEBMAIL = 0x04
NO_IMAP = 0x08
BOUNCE_MAIL = 0x10
NO_RELAY = 0x20
NO_DIALUP = 0x40
NO_SMTP = 0x800
V_OVERRIDE = 0x2000
