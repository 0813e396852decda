"""The one error type codegen reports to its user."""


class ContractError(Exception):
    """A contract (or the generated tree) is wrong; the message names the file and line."""
