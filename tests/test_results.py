import dataclasses
import json

from fleet.errors import CommandError
from fleet.results import FleetResult, HostResult, Outcome


def result(*outcomes: Outcome) -> FleetResult:
    return FleetResult.of("ping", (HostResult(f"h{i}", o) for i, o in enumerate(outcomes)))


def test_exit_code_follows_ansible() -> None:
    assert result(Outcome.OK, Outcome.CHANGED, Outcome.SKIPPED).exit_code == 0
    assert result(Outcome.OK, Outcome.FAILED).exit_code == 2
    assert result(Outcome.FAILED, Outcome.UNREACHABLE).exit_code == 3


def test_counts_name_every_outcome() -> None:
    counts = result(Outcome.OK, Outcome.OK, Outcome.FAILED).counts()
    assert counts == {
        Outcome.OK: 2,
        Outcome.CHANGED: 0,
        Outcome.SKIPPED: 0,
        Outcome.FAILED: 1,
        Outcome.UNREACHABLE: 0,
    }


def test_retry_hosts_are_failed_and_unreachable_in_order() -> None:
    run = result(Outcome.UNREACHABLE, Outcome.OK, Outcome.FAILED)
    assert run.retry_hosts() == ["h0", "h2"]


def test_json_document_shape() -> None:
    run = FleetResult.of(
        "exec",
        [HostResult("a", Outcome.FAILED, "command exited 1: false", details={"exit_code": 1})],
        1.23456,
    )
    doc = run.to_json()
    assert doc["schema"] == 1
    assert doc["exit_code"] == 2
    assert doc["seconds"] == 1.235
    assert doc["summary"]["failed"] == 1
    assert doc["hosts"]["a"]["reason"] == "command exited 1: false"
    assert doc["hosts"]["a"]["details"] == {"exit_code": 1}


def test_a_long_script_is_abbreviated_in_its_error_but_the_evidence_stays() -> None:
    script = "sh -c '" + "echo step; " * 200 + "' fleet-load ref"
    error = CommandError("gpu01", script, 1, stderr="open /var/lib/docker/tmp/x: no space left")
    first_line = error.message.splitlines()[0]
    assert first_line.startswith("gpu01: command exited 1: sh -c 'echo step;")
    assert f"({len(script)} chars)" in first_line and len(first_line) < 200
    assert error.message.endswith("no space left")
    assert error.command == script  # the whole command stays on the error for callers


@dataclasses.dataclass(frozen=True)
class _Moved:
    token: str

    def to_json(self) -> dict[str, str]:
        return {"token": self.token}


def test_a_payload_is_read_typed_and_shown_only_through_the_details() -> None:
    row = HostResult("gpu1", Outcome.CHANGED).with_payload(_Moved("s3cret-token"))
    assert row.details == {"token": "s3cret-token"}
    assert row.typed(_Moved) == _Moved("s3cret-token") and row.typed(str) is None
    # Redaction rewrites the details; the JSON shows them, never the payload.
    redacted = dataclasses.replace(row, details={"token": "********"})
    assert redacted.to_json()["details"] == {"token": "********"}
    assert "s3cret" not in json.dumps(redacted.to_json())
    assert redacted.typed(_Moved) is not None  # still readable by the operations
