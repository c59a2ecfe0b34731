"""Where the reporting commands write (docs/reliability.md): never into someone else's folder, never onto a file; a
path the file system refuses is one line naming it, whichever command meets it."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from apa.errors import as_user_error
from apa.reporting import compare, report, table3
from tests.synthetic_runs import make_sweep

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return make_sweep(tmp_path_factory.mktemp("sweep"), epochs=1)


@pytest.mark.parametrize("command", [compare.main, report.main, table3.main])
def test_out_into_a_folder_of_someone_elses_files_is_refused_and_left_untouched(sweep, tmp_path, capsys, command):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "README.md").write_text("my own notes\n")
    (mine / "figure.png").write_bytes(b"not ours either, but a picture")
    before = _digests(mine)
    with pytest.raises(SystemExit) as stopped:
        command([str(sweep), "--out", str(mine)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "README.md" in err and "--out <a new or empty folder>" in err
    assert len(err.splitlines()) == 1
    assert _digests(mine) == before


def test_out_that_is_a_file_is_one_line(sweep, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("keep me\n")
    with pytest.raises(SystemExit) as stopped:
        compare.main([str(sweep), "--out", str(target)])
    assert stopped.value.code == 2
    assert f"--out {target} is a file, not a folder" in capsys.readouterr().err
    assert target.read_text() == "keep me\n"


def test_the_same_out_twice_and_an_empty_out_are_fine(sweep, tmp_path):
    out = tmp_path / "cmp"
    out.mkdir()
    compare.main([str(sweep), "--out", str(out)])
    report.main([str(sweep), "--out", str(out)])
    compare.main([str(sweep), "--out", str(out)])  # only its own outputs there: rewritten
    assert (out / "comparison.md").exists() and (out / "report.html").exists()


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOTDIR, errno.EEXIST])
def test_a_path_the_file_system_refuses_is_one_line_naming_it(code):
    """The OSErrors a user's path causes (read-only run, a file where a folder goes, a dangling link in the way)
    become one line naming the path, also when wrapped by a library's own exception."""
    cause = OSError(code, os.strerror(code), "/data/runs/r1/eval")
    try:
        try:
            raise cause
        except OSError as e:
            raise RuntimeError("saving failed") from e
    except RuntimeError as wrapped:
        error = as_user_error(wrapped)
    assert error is not None and str(error).startswith("cannot use /data/runs/r1/eval: ")
    assert as_user_error(OSError(code, os.strerror(code))) is None  # no path named: not ours to explain


def test_a_dangling_symlink_as_run_folder_is_one_line(tmp_path, capsys):
    """hydra.run.dir pointing at a link to nothing: mkdir fails with EEXIST, shown as one line."""
    from apa.errors import one_line_errors

    link = tmp_path / "run"
    link.symlink_to(tmp_path / "gone")

    @one_line_errors
    def start():
        link.mkdir(parents=True, exist_ok=True)

    with pytest.raises(SystemExit) as stopped:
        start()
    assert stopped.value.code == 2
    assert f"cannot use {link}: it exists as something else" in capsys.readouterr().err


@pytest.mark.parametrize("command", [compare.main, report.main, table3.main])
def test_a_path_that_does_not_exist_is_named_even_beside_real_runs(sweep, tmp_path, capsys, command):
    """A typo'd path: "no run folders … in <path>" did not say it does not exist; beside a real sweep, its runs
    were left out of the comparison without a word."""
    typo = tmp_path / "nonexist"
    for paths in ([typo], [sweep, typo]):
        with pytest.raises(SystemExit) as stopped:
            command([*map(str, paths), "--out", str(tmp_path / "out")])
        assert stopped.value.code == 2
        assert capsys.readouterr().err.strip() == (f"error: {typo}: no such folder; give run folders or folders of "
                                                   "runs (a sweep)")
    assert not (tmp_path / "out").exists()
