"""open_store, URL handling and secret masking, and memory-store specifics."""

from __future__ import annotations

from typing import Any

import pytest

import runstate
from runstate import (
    InvalidInput,
    MemoryStore,
    RunBootstrapInput,
    RunEventInput,
    RunMetadata,
    RunStateError,
    RunStateStore,
    default_url,
    mask_url,
    open_store,
)


def _bootstrap(run_id: str) -> RunBootstrapInput:
    return RunBootstrapInput(
        metadata=RunMetadata(run_id=run_id, workflow="wf"),
        first_events=[RunEventInput(type="RunQueued")],
    )


async def test_open_store_is_awaitable_and_an_async_context_manager() -> None:
    store = await open_store("memory://")
    assert isinstance(store, RunStateStore)
    await store.close()
    async with open_store("memory://") as managed:
        result = await managed.bootstrap_run_tx(_bootstrap("r1"))
        assert result.last_seq == 1


async def test_context_manager_closes_the_store() -> None:
    async with open_store("memory://") as store:
        pass
    with pytest.raises(InvalidInput, match="closed"):
        await store.get_run_metadata_by_run_id("r1")


async def test_unknown_scheme_names_the_supported_ones() -> None:
    with pytest.raises(InvalidInput) as caught:
        await open_store("mysql://root:hunter2@localhost/db")
    message = str(caught.value)
    for scheme in ("memory://", "sqlite://", "postgresql://"):
        assert scheme in message
    assert "hunter2" not in message
    assert caught.value.code == "INVALID_INPUT"


@pytest.mark.parametrize("url", ["", "not a url", "://nothing"])
async def test_malformed_urls_are_invalid_input(url: str) -> None:
    with pytest.raises(InvalidInput):
        await open_store(url)


async def test_unknown_options_are_refused() -> None:
    with pytest.raises(InvalidInput, match="pool_size"):
        await open_store("memory://", pool_size=3)


async def test_bad_payload_limit_is_refused() -> None:
    with pytest.raises(InvalidInput, match="max_payload_bytes"):
        await open_store("memory://", max_payload_bytes=0)


async def test_named_memory_stores_share_data_and_anonymous_ones_do_not() -> None:
    async with open_store("memory://shared-x") as one, open_store("memory://shared-x") as two:
        await one.bootstrap_run_tx(_bootstrap("r-shared"))
        assert await two.get_run_metadata_by_run_id("r-shared") is not None
    async with open_store("memory://") as three, open_store("memory://") as four:
        await three.bootstrap_run_tx(_bootstrap("r-private"))
        assert await four.get_run_metadata_by_run_id("r-private") is None


def test_default_url_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNSTATE_URL", raising=False)
    assert default_url() == "sqlite:///./runstate.db"
    monkeypatch.setenv("RUNSTATE_URL", "memory://")
    assert default_url() == "memory://"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://app:s3cret@db:5432/runs", "postgresql://app:***@db:5432/runs"),
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
        ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("postgresql://app@db/runs", "postgresql://app@db/runs"),
        ("sqlite:///./runstate.db", "sqlite:///./runstate.db"),
        ("postgresql://u@h:1/db?password=s3cretpw", "postgresql://u@h:1/db?password=***"),
        (
            "postgresql://u@h/db?sslmode=require&sslpassword=keypw&schema=x",
            "postgresql://u@h/db?sslmode=require&sslpassword=***&schema=x",
        ),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p%40ss@h1:5432,h2:5433/db", "postgresql://u:***@h1:5432,h2:5433/db"),
        ("https://hook.example/p?token=abc123&x=1", "https://hook.example/p?token=***&x=1"),
        ("https://hook.example/p#secret=abc123", "https://hook.example/p#secret=***"),
        ("https://h/p?api_key=k1&sig=s1&code=c1", "https://h/p?api_key=***&sig=***&code=***"),
        ("amqp://g@h/?exchange=e&routing_key=k", "amqp://g@h/?exchange=e&routing_key=k"),
        ("host=db user=app password=s3cret", "host=db user=app password=***"),
        ("failed: 'postgresql://a:b@c/d' (x)", "failed: 'postgresql://a:***@c/d' (x)"),
    ],
)
def test_mask_url_hides_passwords(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_url_hides_a_known_password_anywhere_in_a_message() -> None:
    url = "postgresql://app:p%40ss@db/runs"
    message = "connect to postgresql://app:p%40ss@db/runs failed: password 'p@ss' rejected"
    masked = mask_url(message, url)
    assert "p@ss" not in masked
    assert "p%40ss" not in masked


def test_every_error_has_a_stable_code() -> None:
    codes = {
        runstate.RunAlreadyExists: "RUN_ALREADY_EXISTS",
        runstate.RunNotFound: "RUN_NOT_FOUND",
        runstate.ConcurrencyConflict: "CONCURRENCY_CONFLICT",
        runstate.InvalidInput: "INVALID_INPUT",
        runstate.StoreUnavailable: "STORE_UNAVAILABLE",
        runstate.InvalidTransition: "INVALID_TRANSITION",
    }
    for cls, code in codes.items():
        assert issubclass(cls, RunStateError)
        assert cls.code == code


def test_value_types_are_frozen_and_keyword_only() -> None:
    metadata = RunMetadata(run_id="r", workflow="w")
    assert metadata.created_at.utcoffset() is not None
    assert metadata.labels == {}
    assert metadata.schema_version == 1
    with pytest.raises(AttributeError):
        metadata.run_id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        RunMetadata("r", "w")  # type: ignore[call-arg]
    event = RunEventInput(type="T")
    assert len(event.event_id) == 36
    assert RunEventInput(type="T").event_id != event.event_id


async def test_memory_store_payloads_are_private_copies() -> None:
    store = MemoryStore()
    labels = {"k": "v"}
    payload: dict[str, Any] = {"nested": {"list": [1]}}
    await store.bootstrap_run_tx(
        RunBootstrapInput(
            metadata=RunMetadata(run_id="r", workflow="w", labels=labels, input=payload),
            first_events=[RunEventInput(type="RunQueued", payload=payload)],
        )
    )
    labels["k"] = "changed"
    payload["nested"]["list"].append(2)
    metadata = await store.get_run_metadata_by_run_id("r")
    assert metadata is not None
    assert metadata.labels == {"k": "v"}
    assert metadata.input == {"nested": {"list": [1]}}
    (event,) = await store.list_events("r")
    assert event.payload == {"nested": {"list": [1]}}


async def test_deep_json_is_refused_not_a_recursion_error() -> None:
    store = MemoryStore()
    deep: dict[str, object] = {}
    node = deep
    for _ in range(5000):
        child: dict[str, object] = {}
        node["d"] = child
        node = child
    with pytest.raises(InvalidInput, match="deeper"):
        await store.bootstrap_run_tx(
            RunBootstrapInput(
                metadata=RunMetadata(run_id="r", workflow="w"),
                first_events=[RunEventInput(type="T", payload=deep)],  # type: ignore[arg-type]
            )
        )
    assert await store.get_run_metadata_by_run_id("r") is None
