"""The error a command raises for a problem the user can fix.

``musicrec.cli`` prints it as ``musicrec <command>: error: <message>``,
without a traceback, and exits 2.
"""


class UserError(Exception):
    """A problem the user can fix (bad path, missing model...): printed without a traceback."""
