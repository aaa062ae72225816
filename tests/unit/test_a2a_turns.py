"""An A2A task's terminal form from its turn's end event (control/a2a_turns.py), as a replica
that settles a task no control plane follows writes it: no event loop, no Redis."""

from __future__ import annotations

from a2a.helpers.proto_helpers import new_text_part
from a2a.types import Artifact, Message, Role, Task, TaskState, TaskStatus

from control import a2a_turns as T


def working() -> Task:
    note = Message(role=Role.ROLE_AGENT, message_id="m0", parts=[new_text_part("turn 3")])
    return Task(id="t1", context_id="c1", status=TaskStatus(
        state=TaskState.TASK_STATE_WORKING, message=note), artifacts=[
        Artifact(artifact_id="reply", name="reply", parts=[new_text_part("Once up")]),
        Artifact(artifact_id="other", parts=[new_text_part("kept")])])


def test_a_reply_completes_with_the_whole_reply_and_the_old_status_in_history() -> None:
    task = working()
    done = T.settled(task, *T.end_status(task, {"type": "reply", "turn": 3,
                                                 "text": "Once upon a time"}))
    assert done.status.state == TaskState.TASK_STATE_COMPLETED
    assert done.status.HasField("timestamp") and T.age_s(done) < 60
    assert [(a.artifact_id, a.parts[0].text) for a in done.artifacts] == [
        ("other", "kept"), ("reply", "Once upon a time")]
    assert [m.parts[0].text for m in done.history] == ["turn 3"]
    assert task.status.state == TaskState.TASK_STATE_WORKING  # the stored copy untouched


def test_cancelled_and_turn_error_keep_the_streamed_text() -> None:
    task = working()
    gone = T.settled(task, *T.end_status(task, {"type": "cancelled", "turn": 3, "text": ""}))
    assert gone.status.state == TaskState.TASK_STATE_CANCELED
    assert gone.status.message.parts[0].text == "cancelled"
    assert gone.status.message.task_id == "t1" and gone.status.message.role == Role.ROLE_AGENT
    failed = T.settled(task, *T.end_status(task, {"type": "turn_error", "turn": 3,
                                                   "code": "turn_failed", "message": "boom"}))
    assert failed.status.state == TaskState.TASK_STATE_FAILED
    assert failed.status.message.parts[0].text == "turn_failed: boom"
    assert failed.artifacts[0].parts[0].text == "Once up"


def test_a_status_without_a_timestamp_is_old() -> None:
    assert T.age_s(Task(id="t", status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED))) \
        == float("inf")
