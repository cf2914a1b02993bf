"""``fleet build`` and ``fleet images`` as people see them.

Progress (the layer being built, and the build output with ``-v``) goes to stderr; the
result (the three layers, the git facts, the run command) to stdout. On a failed build
without ``-v`` the whole build log is shown, since the error only carries its tail.

Labels, branch names and build output are shown through :mod:`fleet.report.untrusted`
(an image may come from elsewhere, a branch may be named ``main[/]``, a build step may
print terminal controls): never markup, controls escaped.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from fleet.errors import BuildError
from fleet.images.build import BuildResult, LayerInfo
from fleet.images.labels import ImageVersion
from fleet.ops.buildhost import PullBack, RemoteBuild
from fleet.report import human_size
from fleet.report.untrusted import safe_text, visible

_ACTION_STYLES = {"built": "yellow", "reused": "green", "present": "green", "missing": "red"}


class BuildProgress:
    """Hears ``images.build``'s steps and output lines and shows them on ``out``."""

    def __init__(self, out: Console, *, verbose: bool = False) -> None:
        self.out = out
        self.verbose = verbose
        self._lines: list[str] = []

    def step(self, layer: str, message: str) -> None:
        text = safe_text(f"{layer}: ", style="bold")
        text.append(visible(message, lines=True))
        self.out.print(text)

    def output(self, line: str) -> None:
        self._lines.append(line)
        if self.verbose:
            self.out.print(safe_text(f"  {line}", style="dim"))

    def failed(self, error: BuildError) -> None:
        """Show the whole log of a failed build, unless it was already streamed."""
        if self.verbose or not error.log:
            return
        self.out.print(safe_text(f"build log of {error.reference}:", style="bold red"))
        for line in error.log:
            self.out.print(safe_text(f"  {line}"))


def build_view(result: BuildResult) -> RenderableType:
    """The outcome of a build: the image, its three layers, the git facts, the command."""
    framework = result.framework
    head = safe_text(result.reference, style="bold")
    head.append(f"  {visible(_short_id(framework.image_id))}  ")
    head.append(framework.action, style=_ACTION_STYLES.get(framework.action, ""))
    head.append(f" ({visible(framework.reason)})")

    table = Table(box=None, pad_edge=False)
    for column in ("layer", "image", "id", "size", "added", "action"):
        right = column in {"size", "added"}
        table.add_column(column, justify="right" if right else "left", overflow="fold")
    for layer in result.layers:
        table.add_row(*_layer_cells(layer))

    git = result.git
    facts = Text("git: ")
    commits = "commit" if git.commit_count == 1 else "commits"
    facts.append(visible(f"{git.short_commit} ({git.commit_count} {commits}) "))
    facts.append(
        visible(f"on {git.branch}") if git.branch else "detached HEAD",
        style="" if git.branch else "yellow",
    )
    facts.append(visible(f", version {git.version}"))
    if git.dirty:
        facts.append(", uncommitted changes", style="yellow")
    if git.remote_url:
        facts.append(visible(f", remote {git.remote_url}"))

    parts: list[RenderableType] = [head, table, facts]
    command = result.labels.get("org.label-schema.docker.cmd")
    if command:
        parts.append(safe_text(f"run: {command}"))
    if git.dirty:
        parts.append(
            safe_text(
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
    lines = Text(f"built on {visible(host)}; pulled back to this machine's engine:\n", style="bold")
    upstream = remote.build.upstream
    lines.append("  upstream: ", style="bold")
    if remote.upstream is not None:
        shipped = remote.upstream
        lines.append(
            visible(
                f"{shipped.reference} shipped to {host} first, {shipped.layers_sent}/"
                f"{shipped.layers_total} layers, {human_size(shipped.bytes_sent)}"
            )
            + "\n"
        )
    else:
        lines.append(visible(f"{upstream.reference or '?'} {upstream.action} on {host}") + "\n")
    for layer, pulled in (
        (remote.build.base, remote.base),
        (remote.build.framework, remote.framework),
    ):
        lines.append(f"  {layer.role}: ", style="bold")
        lines.append(layer.action, style=_ACTION_STYLES.get(layer.action, ""))
        lines.append(visible(f" on {host}, {_pulled_text(pulled)}") + "\n")
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
        return safe_text(f"no {repository} framework images in this engine (fleet build makes one)")
    table = Table(box=None, pad_edge=False)
    for column in ("tag", "image id", "built", "commit", "branch", "dirty", "size"):
        table.add_column(column, justify="right" if column == "size" else "left")
    holders = {v.tag: v for v in versions if v.tagged}
    for version in versions:
        tag = safe_text(version.tag)
        holder = holders.get(version.tag)
        if not version.tagged and holder is not None and holder.commit != version.commit:
            tag.append(f" (tag moved to {holder.short_commit or '?'})", style="yellow")
        elif not version.tagged:
            tag.append(" (untagged)", style="dim")
        if version.tagged and version.moved_from:
            tag.append(" (moved from ", style="yellow")
            tag.append_text(safe_text(version.moved_from[:7], "yellow"))
            tag.append(" by --retag)", style="yellow")
        table.add_row(
            tag,
            safe_text(_short_id(version.image_id)),
            safe_text(version.build_date or version.created),
            safe_text(version.short_commit),
            safe_text(version.branch or "(detached)"),
            Text("dirty", style="yellow") if version.dirty else Text("clean"),
            human_size(version.size),
        )
    return table


def _layer_cells(layer: LayerInfo) -> tuple[Text, ...]:
    action = Text(layer.action, style=_ACTION_STYLES.get(layer.action, ""))
    added = "" if layer.increment is None else human_size(layer.increment)
    if layer.role != "upstream" and layer.increment is not None:
        added = "+" + added
    return (
        safe_text(layer.role),
        safe_text(layer.reference or "?"),
        safe_text(_short_id(layer.image_id)),
        Text("?" if layer.size is None else human_size(layer.size)),
        Text(added),
        action,
    )


def _short_id(image_id: str | None) -> str:
    if not image_id:
        return "-"
    return image_id.removeprefix("sha256:")[:12]
