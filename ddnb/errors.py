"""The one exception type users see: a bad input or state, reported as one line by the CLI."""


class DdnbError(Exception):
    """A problem the user can fix (bad path, unknown name, impossible setting, corrupt file)."""
