"""Error types crossing stage boundaries; only the CLI turns them into exit codes."""


class ExporterError(Exception):
    """An error meant for the operator: its message is the whole story, no traceback."""


class ConfigError(ExporterError):
    """A config file or program source that cannot be used (exit code 2)."""


class LoadError(ExporterError):
    """One program could not be compiled or attached; the others carry on."""

    def __init__(self, program: str, message: str, unavailable: bool = False) -> None:
        super().__init__(f'program "{program}": {message}')
        self.program = program
        self.reason = message
        # The kernel lacks a probe the program needs: expected on some nodes, not an error.
        self.unavailable = unavailable
