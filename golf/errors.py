"""The one exception type that reaches a user.

Anything a user can cause (a bad path, a broken shard, an unknown config key) raises `GolfError` with a
single-line message that names the thing and what is wrong with it. The command line turns it into
`golf: error: <message>` and exit status 2; programming errors keep their tracebacks.
"""


class GolfError(Exception):
    """A user-facing error: one line, names the file or key, says what is wrong."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # force one line
