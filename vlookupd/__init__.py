"""vlookupd: the shared lookup daemon (see main.py); protocol only, the lookups are vpop's."""
