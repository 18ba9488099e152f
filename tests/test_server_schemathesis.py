"""schemathesis against the live /openapi.json: no 5xx, and every answer fits the document.

It generates requests from the document (boundary values, wrong types, random data), sends
them to a real server on SQLite with an admin token, and checks each response's status code,
content type, headers and body against the document. Streams (never-ending) and the outbox
long-poll are tested in their own modules.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _http_server import serving
from runstate.server import parse_token_lines

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def _schemathesis() -> str:
    beside = Path(sys.executable).with_name("schemathesis")
    found = str(beside) if beside.exists() else shutil.which("schemathesis")
    assert found, "schemathesis is not installed (it is in the dev extra)"
    return found


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    tmp_path: Path, seed: int
) -> None:
    tokens = parse_token_lines(["admin schemathesis-admin-token"], "test")
    with serving(f"sqlite:///{tmp_path / 'st.db'}", tokens=tokens) as server:
        result = subprocess.run(
            [
                _schemathesis(),
                "run",
                f"{server.url}/openapi.json",
                "--header",
                "Authorization: Bearer schemathesis-admin-token",
                "--checks",
                CHECKS,
                "--max-examples",
                "8",
                "--phases",
                "examples,coverage,fuzzing",
                "--exclude-path-regex",
                "(stream|wait)$",
                "--request-timeout",
                "10",
                "--generation-database",
                "none",
                "--seed",
                str(seed),
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
            check=False,
        )
    summary = result.stdout[-6000:]
    assert result.returncode == 0, summary
    assert "passed" in summary
    assert "Tested: 32" in summary, summary
