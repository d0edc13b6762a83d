"""FileStamp tells a file someone else changed from one that was only touched, or is gone."""

import os

from opt_desktop.session.file_stamp import FileStamp


def test_a_change_of_content_is_seen_even_at_the_same_size(tmp_path):
    path = tmp_path / "s.optsession"
    path.write_bytes(b"abcdef")
    stamp = FileStamp.of(path)
    assert not stamp.changed(path)
    st = path.stat()
    path.write_bytes(b"abcdeX")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # another writer, a second later
    assert stamp.changed(path)  # same size: the hash tells
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old time put back...
    assert not stamp.changed(path)  # ...size and time match: taken as unchanged (cheap), as documented
    path.write_bytes(b"abcdefg")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert stamp.changed(path)  # another size


def test_a_touch_or_a_copy_back_is_not_a_change(tmp_path):
    path = tmp_path / "s.optsession"
    path.write_bytes(b"the same bytes")
    stamp = FileStamp.of(path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 3_000_000_000))
    assert not stamp.changed(path)
    path.unlink()
    path.write_bytes(b"the same bytes")
    assert not stamp.changed(path)


def test_a_missing_file_has_no_stamp_and_counts_as_unchanged(tmp_path):
    path = tmp_path / "gone.optsession"
    assert FileStamp.of(path) is None
    path.write_bytes(b"x")
    stamp = FileStamp.of(path)
    path.unlink()
    assert not stamp.changed(path)  # writing it again loses nobody's work
