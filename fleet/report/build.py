"""``fleet build`` and ``fleet images`` as people see them.

Progress (the layer being built, and the build output with ``-v``) goes to stderr; the
result (the three layers, the git facts, the run command) to stdout. On a failed build
without ``-v`` the whole build log is shown, since the error only carries its tail.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from fleet.buildhost import PullBack, RemoteBuild
from fleet.images import BuildError, BuildResult, LayerInfo
from fleet.labels import ImageVersion
from fleet.report import human_size

_ACTION_STYLES = {"built": "yellow", "reused": "green", "present": "green", "missing": "red"}


class BuildProgress:
    """Hears ``images.build``'s steps and output lines and shows them on ``out``."""

    def __init__(self, out: Console, *, verbose: bool = False) -> None:
        self.out = out
        self.verbose = verbose
        self._lines: list[str] = []

    def step(self, layer: str, message: str) -> None:
        text = Text(f"{layer}: ", style="bold")
        text.append(message)
        self.out.print(text)

    def output(self, line: str) -> None:
        self._lines.append(line)
        if self.verbose:
            self.out.print(Text(f"  {line}", style="dim"))

    def failed(self, error: BuildError) -> None:
        """Show the whole log of a failed build, unless it was already streamed."""
        if self.verbose or not error.log:
            return
        self.out.print(Text(f"build log of {error.reference}:", style="bold red"))
        for line in error.log:
            self.out.print(Text(f"  {line}"))


def build_view(result: BuildResult) -> RenderableType:
    """The outcome of a build: the image, its three layers, the git facts, the command."""
    framework = result.framework
    head = Text(result.reference, style="bold")
    head.append(f"  {_short_id(framework.image_id)}  ")
    head.append(framework.action, style=_ACTION_STYLES.get(framework.action, ""))
    head.append(f" ({framework.reason})")

    table = Table(box=None, pad_edge=False)
    for column in ("layer", "image", "id", "size", "added", "action"):
        right = column in {"size", "added"}
        table.add_column(column, justify="right" if right else "left", overflow="fold")
    for layer in result.layers:
        table.add_row(*_layer_cells(layer))

    git = result.git
    facts = Text("git: ")
    commits = "commit" if git.commit_count == 1 else "commits"
    facts.append(f"{git.short_commit} ({git.commit_count} {commits}) ")
    facts.append(
        f"on {git.branch}" if git.branch else "detached HEAD", style="" if git.branch else "yellow"
    )
    facts.append(f", version {git.version}")
    if git.dirty:
        facts.append(", uncommitted changes", style="yellow")
    if git.remote_url:
        facts.append(f", remote {git.remote_url}")

    parts: list[RenderableType] = [head, table, facts]
    command = result.labels.get("org.label-schema.docker.cmd")
    if command:
        parts.append(Text(f"run: {command}"))
    if git.dirty:
        parts.append(
            Text(
                f"warning: {result.reference} was built from a dirty tree "
                "(io.fleet.dirty=true); commit before deploying it",
                style="yellow",
            )
        )
    if git.detached:
        parts.append(
            Text(
                "warning: HEAD is detached; the image records no branch (io.fleet.detached=true)",
                style="yellow",
            )
        )
    return Group(*parts)


def build_host_view(remote: RemoteBuild) -> RenderableType:
    """A build on a build host: the build as ``build_view`` shows it, then per layer where
    it was built and what came back to the controller."""
    host = remote.host
    lines = Text(f"built on {host}; pulled back to this machine's engine:\n", style="bold")
    upstream = remote.build.upstream
    lines.append("  upstream: ", style="bold")
    if remote.upstream is not None:
        shipped = remote.upstream
        lines.append(
            f"{shipped.reference} shipped to {host} first, {shipped.layers_sent}/"
            f"{shipped.layers_total} layers, {human_size(shipped.bytes_sent)}\n"
        )
    else:
        lines.append(f"{upstream.reference or '?'} {upstream.action} on {host}\n")
    for layer, pulled in (
        (remote.build.base, remote.base),
        (remote.build.framework, remote.framework),
    ):
        lines.append(f"  {layer.role}: ", style="bold")
        lines.append(layer.action, style=_ACTION_STYLES.get(layer.action, ""))
        lines.append(f" on {host}, {_pulled_text(pulled)}\n")
    read = sum(p.bytes_read for p in remote.pulled)
    if read:
        lines.append(
            f"  (the build host's docker save streams whole images: "
            f"{human_size(read)} crossed the SSH connection)",
            style="dim",
        )
    return Group(build_view(remote.build), lines)


def _pulled_text(pulled: PullBack) -> str:
    text = (
        f"pulled back {pulled.layers_pulled}/{pulled.layers_total} layers, "
        f"{human_size(pulled.bytes_pulled)}"
    )
    return f"{text} ({pulled.note})" if pulled.note else text


def versions_table(repository: str, versions: Sequence[ImageVersion]) -> RenderableType:
    """``fleet images``: the local versions of ``repository``, newest first."""
    if not versions:
        return Text(f"no {repository} framework images in this engine (fleet build makes one)")
    table = Table(box=None, pad_edge=False)
    for column in ("tag", "image id", "built", "commit", "branch", "dirty", "size"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for version in versions:
        tag = Text(version.tag)
        if not version.tagged:
            tag.append(" (untagged)", style="dim")
        table.add_row(
            tag,
            _short_id(version.image_id),
            version.build_date or version.created,
            version.short_commit,
            version.branch or "(detached)",
            Text("dirty", style="yellow") if version.dirty else Text("clean"),
            human_size(version.size),
        )
    return table


def _layer_cells(layer: LayerInfo) -> tuple[str | Text, ...]:
    action = Text(layer.action, style=_ACTION_STYLES.get(layer.action, ""))
    added = "" if layer.increment is None else human_size(layer.increment)
    if layer.role != "upstream" and layer.increment is not None:
        added = "+" + added
    return (
        layer.role,
        layer.reference or "?",
        _short_id(layer.image_id),
        "?" if layer.size is None else human_size(layer.size),
        added,
        action,
    )


def _short_id(image_id: str | None) -> str:
    if not image_id:
        return "-"
    return image_id.removeprefix("sha256:")[:12]
