"""``:save`` and ``:load`` against hostile paths: existing files, symbolic links, devices,
FIFOs, directories and huge files (issue 16). Sessions replay through ``run_script``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_repl import first_number
from test_repl import replay as replay_wrapped

from gradcalc.cli import repl


def replay(text: str):
    """``test_repl.replay`` with the error text unwrapped (Rich wraps at 80 columns)."""
    code, out, err, session = replay_wrapped(text)
    return code, out, " ".join(err.split()), session


def test_save_refuses_to_overwrite_without_the_bang(tmp_path: Path):
    target = tmp_path / "mine.gc"
    target.write_text("precious\n")
    code, _, err, session = replay(f"a = 2\n:save {target}\na\n")
    assert code == 1
    assert "exists" in err and f":save! {target}" in err
    assert target.read_text() == "precious\n"
    assert session.definitions == ["a = 2"] and session.failures == 1


def test_save_bang_replaces_and_keeps_the_permissions(tmp_path: Path):
    target = tmp_path / "mine.gc"
    target.write_text("precious\n")
    target.chmod(0o640)
    code, out, err, _ = replay(f"a = 2\n:save! {target}\n")
    assert (code, err) == (0, "")
    assert "saved 1 entry" in out
    assert target.read_text().splitlines()[1:] == ["a = 2"]
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.gc"]  # no temporary left


def test_save_makes_a_new_file_with_the_umask_permissions(tmp_path: Path):
    target = tmp_path / "new.gc"
    mask = os.umask(0o022)
    try:
        code, _, err, _ = replay(f"a = 2\n:save {target}\n")
    finally:
        os.umask(mask)
    assert (code, err) == (0, "")
    assert target.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.gc"]


@pytest.mark.parametrize("command", [":save", ":save!"])
def test_save_never_follows_a_symbolic_link(tmp_path: Path, command: str):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    link = tmp_path / "link.gc"
    link.symlink_to(victim)
    dangling = tmp_path / "dangling.gc"
    dangling.symlink_to(tmp_path / "would-be-created.txt")
    code, _, err, _ = replay(f"a = 2\n{command} {link}\n{command} {dangling}\n")
    assert code == 1
    assert err.count("symbolic link") == 2
    assert victim.read_text() == "precious\n"
    assert link.is_symlink() and dangling.is_symlink()
    assert not (tmp_path / "would-be-created.txt").exists()


def test_save_refuses_a_directory_and_reports_an_unwritable_one(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    code, _, err, _ = replay(
        f"a = 2\n:save! {tmp_path / 'sub'}\n:save {tmp_path / 'no' / 'x.gc'}\n"
    )
    assert code == 1
    assert "is a directory" in err
    assert "cannot write" in err


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path, monkeypatch):
    target = tmp_path / "mine.gc"
    target.write_text("precious\n")

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(repl.os, "replace", crash)
    code, _, err, _ = replay(f"a = 2\n:save! {target}\n")
    assert code == 1 and "No space left on device" in err
    assert target.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.gc"]


def test_saved_then_loaded_round_trip(tmp_path: Path):
    target = tmp_path / "s.gc"
    replay(f"a = 2\nb = a * 3\n:save {target}\n")
    code, out, err, _ = replay(f":load {target}\nb\n")
    assert (code, err) == (0, "")
    assert first_number(out.splitlines()[-1]) == 6


@pytest.mark.parametrize("special", ["/dev/zero", "/dev/null", "directory", "fifo", "link"])
def test_load_rejects_what_is_not_a_regular_file(tmp_path: Path, special: str):
    path = Path(special)
    if special == "directory":
        path = tmp_path
    elif special == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)  # nobody writes: a blocking open would hang here
    elif special == "link":
        path = tmp_path / "zero.gc"
        path.symlink_to("/dev/zero")
    code, _, err, session = replay(f"a = 2\n:load {path}\na\n")
    assert code == 1
    assert "not a regular file" in err
    assert session.definitions == ["a = 2"]


def test_load_caps_the_size_and_names_the_cap(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(repl, "LOAD_MAX_BYTES", 1000)
    big = tmp_path / "big.gc"
    big.write_text("x = 1\n" * 200)
    small = tmp_path / "small.gc"
    small.write_text("y = 1\n" * 100)
    code, _, err, session = replay(f":load {big}\n:load {small}\n")
    assert code == 1
    assert "LimitError" in err and "0.001 MB" in err
    assert "x" not in session.names and "y" in session.names


def test_the_default_cap_is_ten_megabytes(tmp_path: Path):
    assert repl.LOAD_MAX_BYTES == 10_000_000
    big = tmp_path / "big.gc"
    with big.open("wb") as stream:  # sparse: no disk needed
        stream.truncate(repl.LOAD_MAX_BYTES + 1)
    code, _, err, _ = replay(f":load {big}\n")
    assert code == 1 and "10 MB" in err


def test_help_lists_save_bang():
    _, out, _, _ = replay(":help\n")
    assert ":save! FILE" in out
