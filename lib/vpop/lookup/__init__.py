"""The lookup daemon's wire protocol and its client side (``vlookupd`` is the server).

:mod:`vpop.lookup.protocol` is the frame format both sides share; :mod:`vpop.lookup.client` is what
vchkpw, vdelivermail, qmail-getpw and the admin library use to ask the daemon, falling back to
their direct path whenever it cannot answer.  The reference is ``vlookupd-protocol.md``.
"""
