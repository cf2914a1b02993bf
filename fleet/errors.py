"""The exception tree of fleet.

    FleetError                       root; carries an exit code and a fix
    ├── InputError (ValueError)      a file could not be parsed or validated   -> exit 4
    │   ├── InventoryError           inventory files, group_vars/host_vars
    │   ├── YamlLimitError           YAML past the loader's limits (size, depth, aliases)
    │   ├── PlaybookError            playbooks
    │   │   └── UndefinedError       a template names a variable that is not defined
    │   ├── ProjectError             a framework project (git, Dockerfiles, settings)
    │   │   └── TagCollisionError    the version tag already names another commit's image
    │   ├── ProvisionSettingsError   fleet_provision (or its overrides) is malformed
    │   └── RunSpecError             a run spec (settings or the image's docker.cmd label)
    │       └── DangerousRunError    a run command that hands the container the host
    ├── UsageError (ValueError)      bad or incomplete options, patterns     -> exit 5
    │   └── PatternError             a host pattern that matches nothing or is malformed
    ├── LabError (RuntimeError)      the local lab could not be brought up    -> exit 1
    ├── EngineError (RuntimeError)   a Docker engine refused or is missing   -> exit 1
    │   └── BuildError               docker build of one layer failed (layer, image, log)
    ├── RegistryError (RuntimeError) a registry could not start or take a push -> exit 1
    ├── Interrupted                  Ctrl-C; carries the results so far      -> exit 130
    │   └── AuditInterrupted         ... and the audit report so far
    ├── PlayStopped                  max_fail_percentage or any_errors_fatal ended a play
    ├── HostOutputError (ValueError) a host printed what no sane host prints  -> its host fails
    │   └── CronBlockError           a host's cron file holds a malformed fleet block
    └── HostError (RuntimeError)     one host failed; caught per host, becomes a result
        ├── UnreachableError         SSH could not connect or authenticate
        │   └── HostKeyError         unknown or changed host key
        ├── LeaseLostError           the run's deploy lock lease is no longer certainly held
        └── CommandError             a command exited non-zero (command, code, stderr tail)

Third-party errors are translated where they are caught (``raise X(...) from exc``), so
callers only ever handle this tree. Every message names what went wrong and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleet.ops.audit import AuditReport
    from fleet.results import FleetResult

# Exit codes follow Ansible's.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_FAILED = 2
EXIT_UNREACHABLE = 3
EXIT_BAD_FILE = 4
EXIT_BAD_OPTIONS = 5
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT (128 + 2)


class FleetError(Exception):
    """Root of fleet's errors. ``fix`` says what the user can do about it."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message}\n  fix: {self.fix}"
        return self.message


class InputError(FleetError, ValueError):
    """A file (inventory, playbook, settings) could not be parsed or validated."""

    exit_code = EXIT_BAD_FILE

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        column: int | None = None,
        fix: str | None = None,
    ) -> None:
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f":{line}"
                if column is not None:
                    where += f":{column}"
            where += ": "
        super().__init__(where + message, fix=fix)
        self.path = path
        self.line = line
        self.column = column


class InventoryError(InputError):
    """An inventory file or its group_vars/host_vars is invalid."""


class PlaybookError(InputError):
    """A playbook is invalid."""


class ProjectError(InputError):
    """A framework project (git repository, Dockerfiles, settings) is unusable."""


class TagCollisionError(ProjectError):
    """A build would move a version tag that names another commit's image."""

    def __init__(self, message: str, *, reference: str, theirs: str, ours: str, fix: str) -> None:
        super().__init__(message, fix=fix)
        self.reference = reference
        self.theirs = theirs
        self.ours = ours


class UsageError(FleetError, ValueError):
    """Bad or incomplete options."""

    exit_code = EXIT_BAD_OPTIONS


class PatternError(UsageError):
    """A host pattern is malformed or matches no host."""


class LabError(FleetError, RuntimeError):
    """The local lab could not be brought up or inspected."""


class EngineError(FleetError, RuntimeError):
    """A Docker engine is missing, stopped or refused a request."""


class RegistryError(FleetError, RuntimeError):
    """A registry could not be started, or an image could not be pushed to it."""


class HostOutputError(FleetError, ValueError):
    """What a host printed is past fleet's limits (size, lines, nesting) or not parseable.

    Raised while parsing one host's output, so the runner fails that host alone with it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(
            message,
            fix="look at the host: its docker or shell tools may be replaced, broken or hostile",
        )


class HostError(FleetError, RuntimeError):
    """Something failed on one host. Caught per host and turned into a result."""

    exit_code = EXIT_FAILED

    def __init__(self, host: str, message: str, *, fix: str | None = None) -> None:
        super().__init__(f"{host}: {message}", fix=fix)
        self.host = host
        self.reason = message


class UnreachableError(HostError):
    """SSH could not reach or authenticate to the host."""

    exit_code = EXIT_UNREACHABLE


class HostKeyError(UnreachableError):
    """The host's key is unknown or differs from the recorded one."""


class LeaseLostError(HostError):
    """The run no longer certainly holds the host's deploy lock: it acts there no more."""


class CommandError(HostError):
    """A command on a host exited non-zero. Carries the command, code and output tail."""

    def __init__(
        self,
        host: str,
        argv: Sequence[str] | str,
        exit_code: int,
        stdout: str = "",
        stderr: str = "",
        *,
        fix: str | None = None,
    ) -> None:
        command = argv if isinstance(argv, str) else " ".join(argv)
        tail = tail_lines(stderr or stdout)
        message = f"command exited {exit_code}: {_abbreviated(command)}"
        if tail:
            message += "\n" + tail
        super().__init__(host, message, fix=fix)
        self.command = command
        self.returncode = exit_code
        self.stdout = stdout
        self.stderr = stderr


def _abbreviated(command: str, limit: int = 160) -> str:
    """A command line short enough for a message: fleet's scripts run as long ``sh -c`` words."""
    flat = " ".join(command.split())
    return flat if len(flat) <= limit else f"{flat[: limit - 24]} ... ({len(command)} chars)"


def tail_lines(text: str, count: int = 10) -> str:
    """The last ``count`` non-empty lines of ``text``, indented as evidence."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join("    " + line for line in lines[-count:])


class YamlLimitError(InputError):
    """YAML past the bounded loader's limits; ``mark`` is where (the loader adds the file)."""

    def __init__(self, message: str, mark: Any) -> None:
        super().__init__(message)
        self.mark = mark


class UndefinedError(PlaybookError):
    """A template names a variable that is not defined."""


class ProvisionSettingsError(InputError):
    """``fleet_provision`` (or its overrides) is malformed."""


class RunSpecError(InputError):
    """A run spec (settings or an image's docker.cmd label) is malformed or unsupported."""


class DangerousRunError(RunSpecError):
    """A run command asks for a flag that gives the container power over the host.

    ``dangers``: every refused flag (runspec's ``Danger`` values: flag, value).
    """

    def __init__(
        self, flag: str, value: str, *, dangers: Sequence[Any] = (), fix: str | None = None
    ) -> None:
        listed = ", ".join(str(danger) for danger in dangers) or f"{flag} {value}"
        super().__init__(
            f"the run command asks for {listed}, which gives the container power over the "
            "host; fleet refuses it",
            fix=fix
            or f"remove {flag} from the run command, or, if you trust whoever builds the "
            f"image, allow it explicitly (allow={{{flag!r}}})",
        )
        self.flag = flag
        self.value = value
        self.dangers = tuple(dangers)


class BuildError(EngineError):
    """``docker build`` of one layer failed. Carries the layer, the image and the log."""

    def __init__(
        self, layer: str, reference: str, reason: str, log: Iterable[str], *, fix: str
    ) -> None:
        self.layer = layer
        self.reference = reference
        self.reason = reason
        self.log = tuple(log)
        message = f"building the {layer} image {reference} failed: {reason}"
        tail = tail_lines("\n".join(self.log), 15)
        if tail:
            message += "\n" + tail
        super().__init__(message, fix=fix)


class Interrupted(FleetError):
    """The run was interrupted; carries the results so far."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, partial: FleetResult) -> None:
        super().__init__("interrupted (Ctrl-C); results so far are shown")
        self.partial = partial


class AuditInterrupted(Interrupted):
    """Ctrl-C during an audit; carries the report of the hosts audited so far (``report``)."""

    def __init__(self, report: AuditReport) -> None:
        super().__init__(report.result)
        self.report = report


class PlayStopped(FleetError):
    """Ends the play (max_fail_percentage) or the playbook (any_errors_fatal)."""

    def __init__(self, reason: str, *, everything: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.everything = everything


class CronBlockError(HostOutputError):
    """The cron file's fleet block is malformed (markers missing, doubled or out of order)."""
