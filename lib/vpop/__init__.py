"""Shared library of the vpop programs: settings, stores, passwords, Maildirs, logging.

Nothing here prints to the terminal or exits; the programs map the exceptions of
:mod:`vpop.errors` to exit codes in one place each.
"""
