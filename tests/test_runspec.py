"""The run spec: settings, rendering, and parsing untrusted docker.cmd labels (no engine)."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.errors import DangerousRunError, FleetError, HostError, RunSpecError
from fleet.hosts.model import Host
from fleet.images.runspec import (
    MAX_LABEL_BYTES,
    HealthCheck,
    RunPolicy,
    RunSpec,
    parse_docker_cmd,
    run_spec_for,
)
from fleet.ops.containers import FrameworkImage

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "cauchy:0.2.7"
LAB_COMMAND = (
    "docker run -d --name cauchy_service --restart unless-stopped --volume /data:/data "
    "--network host --hostname colorai --runtime nvidia --shm-size=2g --ulimit memlock=-1 "
    "--ulimit stack=67108864 cauchy:0.2.7 python cauchy_services.py --port 8339"
)
LAB_OVERRIDES = {"runtime": None, "ulimits": {"memlock": None}}


def lab_settings() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "inventory" / "group_vars" / "all.yml").read_text())
    assert isinstance(data, dict)
    return data


def lab_spec() -> RunSpec:
    return RunSpec.from_settings(lab_settings())


# --- settings and rendering ---------------------------------------------------------------


def test_the_default_settings_reproduce_the_labs_command_exactly() -> None:
    spec = lab_spec()
    assert spec.render(IMAGE) == LAB_COMMAND
    assert spec.to_argv(IMAGE) == shlex.split(LAB_COMMAND)
    assert spec.port == 8339
    assert spec.command == ("python", "cauchy_services.py")


def test_the_lab_group_override_drops_runtime_and_memlock() -> None:
    variables = {**lab_settings(), "fleet_run_overrides": LAB_OVERRIDES}
    spec = RunSpec.from_settings(variables)
    assert spec.runtime is None
    assert spec.ulimits == (("stack", "67108864"),)
    assert spec.render(IMAGE) == LAB_COMMAND.replace(" --runtime nvidia", "").replace(
        " --ulimit memlock=-1", ""
    )
    assert lab_spec().with_overrides(LAB_OVERRIDES) == spec


def test_overrides_merge_key_by_key() -> None:
    spec = RunSpec.from_settings(
        {
            "fleet_run": {
                "name": "svc",
                "env": {"A": "1", "B": 2, "C": True},
                "volumes": ["/data:/data"],
                "ulimits": {"stack": 1},
            },
            "fleet_run_overrides": {
                "env": {"B": None, "D": "four"},
                "volumes": ["/scratch:/scratch:ro"],
                "gpus": "all",
            },
        }
    )
    assert spec.name == "svc"
    assert spec.env == (("A", "1"), ("C", "true"), ("D", "four"))
    assert spec.volumes == ("/scratch:/scratch:ro",)
    assert spec.ulimits == (("stack", "1"),)
    assert spec.gpus == "all"
    assert spec.with_overrides({"env": None, "volumes": None}).env == ()


def test_health_settings() -> None:
    assert HealthCheck.from_settings({}) == HealthCheck()
    check = HealthCheck.from_settings(
        {**lab_settings(), "fleet_run_overrides": {"health": {"timeout": 5}}}
    )
    assert check == HealthCheck(path="/health", timeout=5.0, interval=1.0)
    with pytest.raises(RunSpecError, match=r"fleet_run\.health\.retries: unknown"):
        HealthCheck.from_settings({"fleet_run": {"health": {"retries": 3}}})


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"fleet_run": {"nmae": "x"}}, r"fleet_run\.nmae: unknown run setting"),
        ({"fleet_run": {"command": "python x.py"}}, r"fleet_run\.command: expected a list"),
        ({"fleet_run": {"port": "8339"}}, r"fleet_run\.port: expected a port number"),
        ({"fleet_run": {"port": 70000}}, r"port: 70000 is not a TCP port"),
        ({"fleet_run": {"restart": "sometimes"}}, r"fleet_run\.restart: 'sometimes'"),
        ({"fleet_run": {"ulimits": {"memlok": -1}}}, r"ulimits\.memlok: unknown ulimit"),
        ({"fleet_run": {"ulimits": {"memlock": "lots"}}}, r"ulimits\.memlock: 'lots'"),
        ({"fleet_run": {"volumes": ["data"]}}, r"volumes\[0\]: container path"),
        ({"fleet_run": {"env": {"BAD-KEY": 1}}}, r"env\.BAD-KEY"),
        ({"fleet_run": {"name": "--privileged"}}, r"name: '--privileged' is not valid"),
        ({"fleet_run_overrides": {"detach": "yes"}}, r"fleet_run_overrides\.detach"),
        ({"fleet_run": ["docker", "run"]}, r"fleet_run: expected a mapping"),
    ],
)
def test_bad_settings_name_their_location(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(RunSpecError, match=message):
        RunSpec.from_settings(settings)


def test_a_trailing_port_in_the_command_becomes_the_port() -> None:
    spec = RunSpec(command=("python", "x.py", "--port", "80"))
    assert spec == RunSpec(command=("python", "x.py"), port=80)
    with pytest.raises(RunSpecError, match="set the port only once"):
        RunSpec(command=("x", "--port", "80"), port=81)


# --- parsing ------------------------------------------------------------------------------


def test_the_label_round_trips() -> None:
    spec = lab_spec()
    assert parse_docker_cmd(spec.render(IMAGE), IMAGE) == spec


@pytest.mark.parametrize(
    "label",
    [
        "docker run -d --name=cauchy_service --restart=unless-stopped -v /data:/data "
        "--net=host -h colorai --runtime=nvidia --shm-size 2g --ulimit=memlock=-1 "
        "--ulimit stack=67108864 cauchy:0.2.7 python cauchy_services.py --port 8339",
        "docker run --detach --name 'cauchy_service' --restart \"unless-stopped\" "
        "--volume=/data:/data --network host --hostname=colorai --runtime nvidia "
        "--shm-size=2g --ulimit memlock=-1 --ulimit stack=67108864 cauchy:0.2.7 "
        "python cauchy_services.py --port 8339",
    ],
)
def test_equivalent_spellings_parse_to_the_same_spec(label: str) -> None:
    assert parse_docker_cmd(label, IMAGE) == lab_spec()


def test_shell_metacharacters_are_literal() -> None:
    hostile = "$(touch /tmp/pwned); `id` | rm -rf / && echo '\"\n"
    spec = RunSpec(env=(("NOTE", hostile),), command=("python", "x.py", ";", "rm", "-rf", "/"))
    label = spec.render(IMAGE)
    parsed = parse_docker_cmd(label, IMAGE)
    assert parsed == spec
    argv = parsed.to_argv(IMAGE)
    assert f"NOTE={hostile}" in argv
    assert argv[-4:] == [";", "rm", "-rf", "/"]
    # Unquoted metacharacters in a label are words, never shell syntax.
    parsed = parse_docker_cmd("docker run -d cauchy:0.2.7 python x.py; rm -rf / | sh", IMAGE)
    assert parsed.command == ("python", "x.py;", "rm", "-rf", "/", "|", "sh")


_REFUSED_HOST_PATHS = [
    "/var/spool/cron",  # root's crontab
    "/var/lib/fleet",  # fleet's history and deploy lock
    "/opt",
    "/srv",
    "/mnt",
    "/tmp",
    "/var/log",
    "/var/snap/docker",
    "/datasets",  # a sibling of /data, not in it
    "/data/../root",
    "/data/./x",
    "/data//x",
    "/data/",
    "//data",
    # Below the data root: a container may swap it for a symlink before the next restart.
    "/data/x",
    "/data/projects/shared",
]


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("label", "flag"),
    [
        ("docker run -d --privileged cauchy:0.2.7", "--privileged"),
        ("docker run -d --privileged=true cauchy:0.2.7", "--privileged"),
        ("docker run -d --pid host cauchy:0.2.7", "--pid"),
        ("docker run -d --pid=container:other cauchy:0.2.7", "--pid"),
        ("docker run -d --ipc=host cauchy:0.2.7", "--ipc"),
        ("docker run -d --userns=host cauchy:0.2.7", "--userns"),
        ("docker run -d --cap-add SYS_ADMIN cauchy:0.2.7", "--cap-add"),
        ("docker run -d --cap-add=ALL cauchy:0.2.7", "--cap-add"),
        ("docker run -d --device /dev/sda cauchy:0.2.7", "--device"),
        ("docker run -d --security-opt seccomp=unconfined cauchy:0.2.7", "--security-opt"),
        ("docker run -d --network container:db cauchy:0.2.7", "--network"),
        ("docker run -d --network lab_net cauchy:0.2.7", "--network"),
        ("docker run -d --net=db_backend cauchy:0.2.7", "--network"),
        ("docker run -d --ulimit rtprio=99 cauchy:0.2.7", "--ulimit"),
        ("docker run -d -v /:/x cauchy:0.2.7", "--volume"),
        ("docker run -d -v /:/x:ro cauchy:0.2.7", "--volume"),
        ("docker run -d --volume //:/x cauchy:0.2.7", "--volume"),
        ("docker run -d -v /etc:/etc cauchy:0.2.7", "--volume"),
        ("docker run -d -v /var:/v cauchy:0.2.7", "--volume"),
        ("docker run -d -v /var/run/docker.sock:/s cauchy:0.2.7", "--volume"),
        ("docker run -d -v /proc/1/root:/r cauchy:0.2.7", "--volume"),
        # The review's restart swap: the second mount is below the first.
        ("docker run -d --restart always -v /data:/data -v /data/x:/host cauchy:0.2.7", "--volume"),
        # Another service's named volume, and a runtime the host did not register for us.
        ("docker run -d -v postgres_data:/x cauchy:0.2.7", "--volume"),
        ("docker run -d --runtime kata-host cauchy:0.2.7", "--runtime"),
        *((f"docker run -d -v {path}:/c cauchy:0.2.7", "--volume") for path in _REFUSED_HOST_PATHS),
    ],
)
def test_dangerous_flags_are_refused_unless_allowed(label: str, flag: str) -> None:
    with pytest.raises(DangerousRunError) as caught:
        parse_docker_cmd(label, IMAGE)
    assert caught.value.flag == flag
    assert flag in str(caught.value)
    assert caught.value.fix
    spec = parse_docker_cmd(label, IMAGE, allow={flag})
    assert [danger.flag for danger in spec.dangers()] == [flag]
    assert parse_docker_cmd(spec.render(IMAGE), IMAGE, allow={flag}) == spec


@pytest.mark.hostile
def test_a_refused_host_path_names_the_allowed_ones_and_the_setting() -> None:
    with pytest.raises(DangerousRunError) as caught:
        parse_docker_cmd("docker run -d -v /var/spool/cron:/c cauchy:0.2.7", IMAGE)
    assert "--volume /var/spool/cron:/c" in caught.value.message
    assert caught.value.fix is not None
    assert "/data" in caught.value.fix and "fleet_run_allow_paths" in caught.value.fix


@pytest.mark.hostile
@pytest.mark.parametrize("propagation", ["shared", "rshared", "slave", "rslave", "ro,rshared"])
def test_mount_propagation_is_refused_even_when_volumes_are_allowed(propagation: str) -> None:
    label = f"docker run -d -v /data/x:/data:{propagation} cauchy:0.2.7"
    with pytest.raises(RunSpecError, match=r"mount propagation .* is refused") as caught:
        parse_docker_cmd(label, IMAGE, allow={"--volume"})
    assert caught.value.fix
    with pytest.raises(RunSpecError, match="mount propagation"):
        RunSpec.from_settings({"fleet_run": {"volumes": [f"/data:/data:{propagation}"]}})


def test_private_propagation_stays_accepted() -> None:
    spec = parse_docker_cmd("docker run -d -v /data:/x:ro,rprivate cauchy:0.2.7", IMAGE)
    assert spec.volumes == ("/data:/x:ro,rprivate",)


@pytest.mark.parametrize(
    "flag",
    [
        "--uts=host",
        "--cgroupns=host",
        "--mount=type=bind,src=/,dst=/h",
        "--volumes-from=x",
        "--device-cgroup-rule=a *:* rwm",
        "--env-file=/etc/shadow",
        "--sysctl=kernel.x=1",
    ],
)
def test_dangerous_flags_that_a_spec_cannot_express_are_always_refused(flag: str) -> None:
    label = shlex.join(["docker", "run", flag, IMAGE])
    name = flag.partition("=")[0]
    with pytest.raises(DangerousRunError) as caught:
        parse_docker_cmd(label, IMAGE, allow={name})
    assert caught.value.flag == name


@pytest.mark.hostile
def test_every_danger_is_listed() -> None:
    with pytest.raises(DangerousRunError) as caught:
        parse_docker_cmd("docker run --privileged -v /:/h --cap-add ALL cauchy:0.2.7", IMAGE)
    flags = [danger.flag for danger in caught.value.dangers]
    assert flags == ["--privileged", "--cap-add", "--volume"]


def test_harmless_mounts_are_accepted() -> None:
    label = (
        "docker run -d -v /data:/data -v /data:/models:ro -v /scratch --runtime runc cauchy:0.2.7"
    )
    spec = parse_docker_cmd(label, IMAGE)
    assert spec.dangers() == ()
    assert len(spec.volumes) == 3
    assert spec.bind_sources() == ("/data", "/data")
    named = parse_docker_cmd("docker run -d -v cache:/cache cauchy:0.2.7", IMAGE, volumes={"cache"})
    assert named.named_volumes() == ("cache",)


def test_a_host_allows_more_roots_and_its_own_data_root() -> None:
    # /srv was accepted by the old denylist; now only when the host allows it, whole.
    label = "docker run -d -v /srv/models:/models:ro -v /scratch:/run cauchy:0.2.7"
    with pytest.raises(DangerousRunError):
        parse_docker_cmd(label, IMAGE)
    spec = parse_docker_cmd(label, IMAGE, allowed_paths=("/data", "/srv/models", "/scratch"))
    assert spec.bind_sources() == ("/srv/models", "/scratch")
    # A path below an allowed root is refused even when the caller lists both.
    with pytest.raises(DangerousRunError):
        parse_docker_cmd(
            "docker run -d -v /scratch/run:/r cauchy:0.2.7",
            IMAGE,
            allowed_paths=("/scratch", "/scratch/run"),
        )
    policy = RunPolicy.for_host(
        {
            "fleet_provision": {"data_root": "/data"},
            "fleet_provision_overrides": {"data_root": "/storage/lab"},
            "fleet_run_allow_paths": ["/srv/models", "/scratch"],
            "fleet_run_allow_runtimes": ["runc"],
            "fleet_run_allow_volumes": ["cache"],
        }
    )
    assert policy.paths == ("/storage/lab", "/srv/models", "/scratch")
    assert policy.roots == policy.paths
    assert policy.runtimes == {"runc"} and policy.volumes == {"cache"}
    assert RunPolicy.for_host({}).paths == ("/data",)
    assert RunPolicy.for_host({}).runtimes == {"runc", "nvidia"}
    # A host path never lets a label mount a host-system tree.
    for system in ("/var/run", "/var/lib/fleet", "/var/spool/cron", "/usr/local/lib/fleet"):
        with pytest.raises(DangerousRunError):
            parse_docker_cmd(
                f"docker run -d -v {system}:/r cauchy:0.2.7", IMAGE, allowed_paths=["/var", "/usr"]
            )


@pytest.mark.hostile
@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"fleet_run_allow_paths": ["/data/models"]}, r"\[0\]: /data/models and /data nest"),
        ({"fleet_run_allow_paths": ["/srv", "/srv/a"]}, r"\[1\]: /srv/a and /srv nest"),
        ({"fleet_run_allow_paths": ["/"]}, r"\[0\]: / and /data nest"),
        ({"fleet_run_allow_paths": ["/var"]}, r"\[0\]: /var is, holds or lies in a host-system"),
        ({"fleet_run_allow_paths": ["/var/lib/dpkg"]}, r"host-system"),
        ({"fleet_run_allow_runtimes": ["bad name"]}, r"fleet_run_allow_runtimes\[0\]"),
        ({"fleet_run_allow_volumes": "cache"}, r"fleet_run_allow_volumes: expected a list"),
    ],
)
def test_allowed_roots_never_nest_nor_hold_the_system(
    variables: dict[str, Any], message: str
) -> None:
    with pytest.raises(RunSpecError, match=message) as caught:
        RunPolicy.for_host(variables)
    assert caught.value.fix


@pytest.mark.hostile
def test_inventory_binds_below_a_writable_tree_are_swappable_too() -> None:
    policy = RunPolicy.for_host({})
    spec = RunSpec(volumes=("/data:/data", "/data/models:/models:ro"))
    assert policy.swappable_binds(spec) == ("/data/models",)
    # Below one of the spec's own read-write binds, outside the roots: swappable too.
    spec = RunSpec(volumes=("/srv:/srv", "/srv/x:/x", "/opt:/opt:ro", "/opt/y:/y"))
    assert policy.swappable_binds(spec) == ("/srv/x",)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"fleet_run_allow_paths": "/srv"}, r"fleet_run_allow_paths: expected a list"),
        ({"fleet_run_allow_paths": ["srv"]}, r"fleet_run_allow_paths\[0\]: 'srv' is not"),
        ({"fleet_run_allow_paths": ["/data/../etc"]}, r"fleet_run_allow_paths\[0\]"),
        ({"fleet_run_allow_paths": [7]}, r"fleet_run_allow_paths\[0\]: expected text"),
        ({"fleet_run_allow": "--network"}, r"fleet_run_allow: expected a list"),
        ({"fleet_provision": {"data_root": "data"}}, r"fleet_provision\.data_root: 'data'"),
    ],
)
def test_a_malformed_policy_names_its_setting(variables: dict[str, Any], message: str) -> None:
    with pytest.raises(RunSpecError, match=message):
        RunPolicy.for_host(variables)


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("", "must start with 'docker run'"),
        ("docker", "must start with 'docker run'"),
        ("sudo docker run cauchy:0.2.7", "must start with 'docker run'"),
        ("docker -H tcp://evil:2375 run cauchy:0.2.7", "must start with 'docker run'"),
        ("docker exec cauchy:0.2.7", "must start with 'docker run'"),
        ("docker run", "names no image"),
        ("docker run -d", "names no image"),
        ("docker run -d other:1.0", "runs image 'other:1.0'"),
        ("docker run -d cauchy:0.2.8", "runs image 'cauchy:0.2.8'"),
        ("docker run -d cauchy", "runs image 'cauchy'"),
        ("docker run -it cauchy:0.2.7", "combined or attached short flags"),
        ("docker run -v/:/x cauchy:0.2.7", "combined or attached short flags"),
        ("docker run --rm cauchy:0.2.7", "'--rm' is not supported"),
        ("docker run --entrypoint sh cauchy:0.2.7", "'--entrypoint' is not supported"),
        ("docker run -u root cauchy:0.2.7", "'-u' is not supported"),
        ("docker run --name cauchy:0.2.7", "names no image"),
        ("docker run --name --privileged cauchy:0.2.7", "must not be empty or start with '-'"),
        ("docker run --name a --name b cauchy:0.2.7", "--name given twice"),
        ("docker run -e A=1 -e A=2 cauchy:0.2.7", "--env A given twice"),
        ("docker run -e PATH cauchy:0.2.7", "expected NAME=VALUE"),
        ("docker run --privileged=maybe cauchy:0.2.7", "expected --privileged=true"),
        ("docker run -- cauchy:0.2.7", "'--' before the image"),
        ("docker run --restart=sometimes cauchy:0.2.7", "restart: 'sometimes' is not valid"),
        ("docker run 'cauchy:0.2.7", "not a valid command line"),
        ("docker run cauchy:0.2.7 \\", "not a valid command line"),
        ("docker run -e 'A=\x00' cauchy:0.2.7", "NUL"),
    ],
)
def test_malformed_or_unsupported_labels_are_refused(label: str, message: str) -> None:
    with pytest.raises(RunSpecError, match=message):
        parse_docker_cmd(label, IMAGE)


@pytest.mark.hostile
@pytest.mark.parametrize(
    "label",
    [
        "docker run cauchy:0.2.7",
        "docker run --detach=false cauchy:0.2.7",
        RunSpec(detach=False, name="x1").render(IMAGE),
    ],
)
def test_a_label_without_detach_is_refused(label: str) -> None:
    # Attached, 'docker run' returns only when the container exits: every deploy would hang.
    with pytest.raises(RunSpecError, match=r"attached \(no -d\)") as caught:
        parse_docker_cmd(label, IMAGE)
    assert caught.value.fix is not None and "add -d" in caught.value.fix


def test_the_detach_flag_is_read_in_every_spelling() -> None:
    for label in ("docker run -d cauchy:0.2.7", "docker run --detach=true cauchy:0.2.7"):
        assert parse_docker_cmd(label, IMAGE).detach is True


def test_settings_win_over_the_label() -> None:
    from_label = parse_docker_cmd(LAB_COMMAND, IMAGE)
    on_a_cpu_host = from_label.with_overrides(LAB_OVERRIDES)
    assert "--runtime" not in on_a_cpu_host.to_argv(IMAGE)
    assert "memlock=-1" not in on_a_cpu_host.to_argv(IMAGE)


# --- properties ---------------------------------------------------------------------------

_NAME = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{1,20}", fullmatch=True)
_PATH = st.from_regex(r"(/[a-z0-9_.-]{1,8}){1,3}", fullmatch=True).filter(
    lambda path: ".." not in path.split("/") and "." not in path.split("/")
)
_WORD = st.text(st.characters(blacklist_characters="\x00"), max_size=12)
_VALUE = st.text(st.characters(blacklist_characters="\x00"), max_size=30)
_ENV = st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), _VALUE)
_ULIMITS = st.dictionaries(
    st.sampled_from(["core", "memlock", "nofile", "stack", "nproc"]),
    st.from_regex(r"-?[0-9]{1,9}(:-?[0-9]{1,9})?", fullmatch=True),
)
_COMMAND = st.lists(_WORD.filter(lambda word: word != "--port"), max_size=5)


@st.composite
def run_specs(draw: st.DrawFn) -> RunSpec:
    optional = st.none() | st.just(True)
    return RunSpec(
        name=draw(st.none() | _NAME),
        restart=draw(st.none() | st.sampled_from(["no", "always", "on-failure:3"])),
        detach=draw(st.booleans()),
        volumes=tuple(draw(st.lists(st.tuples(_PATH, _PATH).map(":".join), max_size=3))),
        network=draw(st.none() | st.sampled_from(["host", "bridge", "lab_net"])),
        hostname=draw(st.none() | st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)),
        runtime=draw(st.none() | st.sampled_from(["nvidia", "runc"])),
        gpus=draw(st.none() | st.sampled_from(["all", "2", '"device=0,1"'])),
        shm_size=draw(st.none() | st.from_regex(r"[1-9][0-9]{0,3}[kmg]?", fullmatch=True)),
        ulimits=tuple(draw(_ULIMITS).items()),
        env=tuple(draw(_ENV).items()),
        publish=tuple(draw(st.lists(st.sampled_from(["8339", "127.0.0.1::8339"]), max_size=2))),
        ipc=draw(st.none() | st.sampled_from(["private", "host"])),
        privileged=draw(optional) is True,
        cap_add=tuple(draw(st.lists(st.sampled_from(["SYS_PTRACE", "NET_ADMIN"]), max_size=2))),
        command=tuple(draw(_COMMAND)),
        port=draw(st.none() | st.integers(1, 65535)),
    )


_EVERY_FLAG = {"--privileged", "--cap-add", "--ipc", "--volume", "--device", "--pid", "--network"}


@given(spec=run_specs(), image=st.from_regex(r"[a-z0-9]{1,10}(:[0-9.]{1,8})?", fullmatch=True))
def test_rendered_specs_parse_back_to_themselves(spec: RunSpec, image: str) -> None:
    label = spec.render(image)
    assert shlex.split(label) == spec.to_argv(image)
    if not spec.detach:
        with pytest.raises(RunSpecError, match="no -d"):
            parse_docker_cmd(label, image, allow=_EVERY_FLAG)
        return
    assert parse_docker_cmd(label, image, allow=_EVERY_FLAG) == spec
    if not spec.dangers():
        assert parse_docker_cmd(label, image) == spec


_FLAG_WORDS = sorted(
    [
        "-d",
        "-v",
        "-e",
        "-p",
        "-h",
        "--name",
        "--volume",
        "--env",
        "--ulimit",
        "--shm-size=",
        "--privileged",
        "--pid",
        "--cap-add",
        "--network",
        "--mount",
        "--detach=false",
        "-it",
        "--",
        "-",
        "=",
        "/:/x",
        "memlock=-1",
        "host",
        IMAGE,
    ]
)


@settings(max_examples=400)
@given(st.text(max_size=120))
def test_arbitrary_text_raises_nothing_but_fleet_errors(text: str) -> None:
    try:
        parse_docker_cmd(text, IMAGE)
    except FleetError as exc:
        assert isinstance(exc, RunSpecError)
        assert isinstance(exc, ValueError)


@pytest.mark.hostile
@settings(max_examples=400)
@given(
    st.lists(
        st.sampled_from(_FLAG_WORDS) | st.text(max_size=15) | _NAME,
        max_size=12,
    ),
    st.booleans(),
)
def test_hostile_command_lines_raise_nothing_but_fleet_errors(
    words: list[str], quote: bool
) -> None:
    label = shlex.join(["docker", "run", *words]) if quote else " ".join(["docker run", *words])
    try:
        spec = parse_docker_cmd(label, IMAGE)
    except RunSpecError:
        return
    # Whatever is accepted is harmless and renders back to itself.
    assert spec.dangers() == ()
    assert parse_docker_cmd(spec.render(IMAGE), IMAGE) == spec


# --- size, speed and names ----------------------------------------------------------------


def _with_env(count: int) -> str:
    return "docker run -d " + " ".join(f"-e V{i}={i}" for i in range(count)) + " " + IMAGE


def _parse_seconds(label: str) -> tuple[float, RunSpec | RunSpecError]:
    started = time.monotonic()
    try:
        outcome: RunSpec | RunSpecError = parse_docker_cmd(label, IMAGE)
    except RunSpecError as exc:
        outcome = exc
    return time.monotonic() - started, outcome


@pytest.mark.hostile
def test_a_huge_label_is_refused_at_once_and_says_the_limit() -> None:
    label = _with_env(50_000)  # 50k --env entries: about 600 s with a quadratic parser
    seconds, outcome = _parse_seconds(label)
    assert isinstance(outcome, RunSpecError)
    assert "64 KiB" in outcome.message and str(len(label)) in outcome.message
    assert seconds < 5  # a hang guard, not a benchmark


@pytest.mark.hostile
def test_a_label_just_under_the_limit_parses_in_linear_time() -> None:
    count = 4_500
    label = _with_env(count)
    assert len(label) <= MAX_LABEL_BYTES
    seconds, outcome = _parse_seconds(label)
    assert isinstance(outcome, RunSpec), outcome
    assert len(outcome.env) == count
    assert seconds < 5  # a hang guard, not a benchmark
    _, repeated = _parse_seconds(label.replace(IMAGE, f"-e V0=again {IMAGE}"))
    assert isinstance(repeated, RunSpecError) and "--env V0 given twice" in repeated.message


def _image(label: str) -> FrameworkImage:
    return FrameworkImage(
        id="sha256:" + "1" * 64,
        tags=(IMAGE,),
        labels={"org.label-schema.docker.cmd": label},
        size=1,
        created="",
    )


NAMED_HOST = Host(
    "gpu1",
    {
        "fleet_run": {"name": "cauchy_service", "volumes": ["/data:/data"]},
        "fleet_run_overrides": {"runtime": None},
    },
)


@pytest.mark.hostile
def test_a_label_naming_another_container_is_refused() -> None:
    label = "docker run -d --name postgres -v /data:/data cauchy:0.2.7 python x.py"
    with pytest.raises(HostError) as caught:
        run_spec_for(NAMED_HOST, _image(label), IMAGE)
    assert "names the container 'postgres'" in caught.value.reason
    assert "'cauchy_service'" in caught.value.reason
    assert caught.value.fix is not None and "fleet_run.name: cauchy_service" in caught.value.fix


def test_the_inventorys_name_is_the_containers_name() -> None:
    unnamed = run_spec_for(NAMED_HOST, _image("docker run -d cauchy:0.2.7"), IMAGE)
    assert unnamed.name == "cauchy_service"
    same = run_spec_for(
        NAMED_HOST, _image("docker run -d --name cauchy_service cauchy:0.2.7"), IMAGE
    )
    assert same.name == "cauchy_service"
    renamed = Host("gpu2", {**NAMED_HOST.vars, "fleet_run_overrides": {"name": "svc2"}})
    assert run_spec_for(renamed, _image("docker run -d cauchy:0.2.7"), IMAGE).name == "svc2"
    # An inventory naming no container keeps the label's (deploy guards the host's others).
    anonymous = Host("gpu3", {})
    assert run_spec_for(anonymous, _image(LAB_COMMAND), IMAGE).name == "cauchy_service"


@pytest.mark.hostile
def test_the_hosts_policy_reaches_the_label() -> None:
    label = "docker run -d --network lab_net -v /scratch:/x --runtime kata cauchy:0.2.7"
    with pytest.raises(HostError, match="refusing the run command"):
        run_spec_for(Host("gpu4", {}), _image(label), IMAGE)
    trusting = Host(
        "gpu5",
        {
            "fleet_run_allow": ["--network"],
            "fleet_run_allow_paths": ["/scratch"],
            "fleet_run_allow_runtimes": ["runc", "kata"],
        },
    )
    spec = run_spec_for(trusting, _image(label), IMAGE)
    assert spec.network == "lab_net" and spec.bind_sources() == ("/scratch",)
    # The inventory's own overrides are held to the same physics: no bind below a root.
    swapping = Host("gpu7", {"fleet_run_overrides": {"volumes": ["/data:/data", "/data/m:/m"]}})
    with pytest.raises(HostError, match="mounts /data/m, below a directory") as caught:
        run_spec_for(swapping, _image("docker run -d cauchy:0.2.7"), IMAGE)
    assert caught.value.fix
    attached = Host("gpu6", {"fleet_run_overrides": {"detach": False}})
    with pytest.raises(HostError, match="detach: false"):
        run_spec_for(attached, _image("docker run -d cauchy:0.2.7"), IMAGE)
