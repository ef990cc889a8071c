"""Whole writes and chunked reads on a descriptor: what every delivery needs of file I/O.

Apart from :mod:`vpop.files` (which holds the file stores' machinery) so that a delivery does
not load all of that, and on ``posix`` alone.
"""

import posix


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a pipe or a signal may cut a write short)."""
    view = memoryview(data)
    while view:
        view = view[posix.write(fd, view):]


def read_chunks(fd: int, offset: int, chunk: int):
    """Yield the contents of ``fd`` from ``offset`` to its end in pieces of at most ``chunk``.

    ``pread`` keeps the descriptor's position alone (a delivery program shares it); a
    descriptor that cannot seek (a pipe) is read sequentially instead.  Errors are raised as
    ``OSError`` for the caller to word.
    """
    import errno

    seekable = True
    while True:
        if seekable:
            try:
                data = posix.pread(fd, chunk, offset)
            except OSError as exc:
                if exc.errno != errno.ESPIPE:
                    raise
                seekable = False
                data = posix.read(fd, chunk)
        else:
            data = posix.read(fd, chunk)
        if not data:
            return
        offset += len(data)
        yield data
