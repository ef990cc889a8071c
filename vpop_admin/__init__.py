"""vpopmail's admin commands (``vadddomain``, ``vadduser`` ...): one module each, protocol only.

Each module's ``main()`` parses the command line, calls :mod:`vpop.admin`, and maps outcomes to
exit codes through :func:`vpop.admin.cli.run`.
"""
