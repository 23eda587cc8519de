"""Owner-only files and folders, also when they already exist with looser modes."""
import os
import stat

import pytest

from clinical_t5x import owner_only


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_make_dir_tightens_new_and_existing_folders(tmp_path):
    made = owner_only.make_dir(tmp_path / "a" / "b")
    assert _mode(made) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)
    owner_only.make_dir(loose)
    assert _mode(loose) == 0o700


def test_open_file_is_owner_only_before_writing_and_truncates(tmp_path):
    path = tmp_path / "f.json"
    path.write_text("old contents that are longer")
    os.chmod(path, 0o644)
    with owner_only.open_file(path, "w") as f:
        assert _mode(path) == 0o600  # before the first byte goes in
        f.write("new")
    assert path.read_text() == "new"
    owner_only.create_file(tmp_path / "empty")
    assert _mode(tmp_path / "empty") == 0o600 and (tmp_path / "empty").stat().st_size == 0


def test_restrict_tree(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "w.bin").write_bytes(b"x")
    os.chmod(tmp_path / "d" / "e" / "w.bin", 0o644)
    owner_only.restrict_tree(tmp_path / "d")
    assert _mode(tmp_path / "d" / "e") == 0o700
    assert _mode(tmp_path / "d" / "e" / "w.bin") == 0o600


def assert_owner_only(root) -> None:
    """No file or folder under `root` (itself included) grants group or other any access."""
    loose = []
    for dirpath, dirnames, filenames in os.walk(root):
        for path in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            if stat.S_IMODE(os.lstat(path).st_mode) & 0o077:
                loose.append(f"{path} {oct(stat.S_IMODE(os.lstat(path).st_mode))}")
    assert not loose, loose


def test_private_umask_covers_every_writer_and_is_restored(tmp_path):
    previous = os.umask(0o022)
    try:
        @owner_only.private_umask()
        def write_like_a_third_party(folder):
            folder.mkdir()
            (folder / "events.out.tfevents").write_bytes(b"x")  # plain open(): umask only
            return os.umask(0o077)

        assert write_like_a_third_party(tmp_path / "run") == 0o077
        assert os.umask(0o022) == 0o022  # restored after the call
        assert_owner_only(tmp_path / "run")
        (tmp_path / "outside").write_bytes(b"x")
        with pytest.raises(AssertionError):
            assert_owner_only(tmp_path)
    finally:
        os.umask(previous)
