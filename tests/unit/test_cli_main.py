"""The CLI's exit contract (issue 2): 0 or 1, and a one-line error on stderr, usage errors too.

``main()`` runs in-process with its real argv handling (a subprocess per case costs seconds of
imports on a loaded machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudmeta.cli.main import main


def _run(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.argv", ["cloudmeta", *argv])
    with pytest.raises(SystemExit) as info:
        main()
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out, err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["bogus"], "No such command 'bogus'"),
        (["network", "create"], "Missing argument 'NAME'"),
        (["--no-such-option"], "No such option"),
        (["network", "list", "-f", "xml"], "'xml' is not one of"),
    ],
)
def test_usage_errors_exit_1_with_one_line(
    argv: list[str],
    needle: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CLOUDMETA_STATE_PATH", str(tmp_path))
    code, out, err = _run(argv, monkeypatch, capsys)
    assert code == 1, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert out == ""


@pytest.mark.parametrize("argv", [["--help"], ["network", "-h"], ["--version"]])
def test_help_and_version_exit_0(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(argv, monkeypatch, capsys)
    assert code == 0 and out
