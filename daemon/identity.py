"""File identity: which checkpoint a file continues, wherever it now is (ARCHITECTURE.md, *File identity*).

Watcher events and rescans are only hints ("look at this path"); which checkpoint the file at a
path continues, and whether it must be read again, is always re-derived here from the file and
the checkpoint rows, in the order of the identity table:

1. appended   -> same inode, head and tail: read on from the offset;
2. truncated  -> size below the offset or the size seen, or the bytes before the offset changed:
                 read again from 0 as a new generation;
3. replaced   -> same path, new inode or new head: read again from 0 as a new generation;
4. renamed    -> a path holding the (dev, inode, head) of a checkpoint, live or gone, whose own
                 path no longer holds it: the checkpoint follows the file, whatever happened in
                 between (chains of renames, swaps), and nothing is read twice;
5. deleted    -> rows stay; the checkpoint is marked gone with the time;
6. inode reuse never inherits an offset: a claimed checkpoint is then checked like any other
   (size, head, the tail before its offset), so different bytes are read again from 0,
   re-attaching only lines that are really the same.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import msgspec

from csm.daemon import reader
from csm.daemon.store import FileRow, Store, iso_mtime, now_iso
from csm.daemon.tree import Tree, describe

log = logging.getLogger("csm.ingest")

OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


def _holds(f: FileRow) -> bool:
    """Whether ``f``'s path still holds the inode its checkpoint was made on."""
    try:
        st = os.stat(f.path, follow_symlinks=False)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (f.dev, f.inode)


class Checkpoints:
    """Every file's checkpoint, kept in step with ``sync_metadata``; used on the ingest thread only."""

    def __init__(self, store: Store, tree: Tree) -> None:
        self.store = store
        self.tree = tree
        self.by_id: dict[int, FileRow] = {f.file_id: f for f in store.files()}
        self.live: dict[str, FileRow] = {f.path: f for f in self.by_id.values() if not f.gone_at}
        """Live checkpoints by path; a gone one keeps the path its file was last seen at, which another
        file may hold by now, so gone ones are found by file id, inode or path in the database."""
        self.next_id = store.next_file_id()

    def reload(self) -> None:
        """Back to what ``sync_metadata`` holds, after a transaction whose changes were adopted early was
        rolled back (``Ingestor.visit_together``); each file keeps its one ``FileRow`` object."""
        rows = {f.file_id: f for f in self.store.files()}
        for file_id in self.by_id.keys() - rows.keys():
            del self.by_id[file_id]
        for file_id, g in rows.items():
            f = self.by_id.setdefault(file_id, g)
            if f is not g:
                adopt(f, g)
        self.live = {f.path: f for f in self.by_id.values() if not f.gone_at}
        self.next_id = self.store.next_file_id()

    def new(self, path: str, root: Path, st: os.stat_result) -> FileRow:
        project, key, parent = describe(root, Path(path))
        f = FileRow(
            file_id=self.next_id, path=path, root=str(root), project=project, session_key=key,
            parent_session=parent, dev=st.st_dev, inode=st.st_ino, size=0, mtime_ns=-1, offset=0,
        )  # mtime -1: never saved yet, so the first visit always writes the checkpoint
        self.next_id += 1
        self.by_id[f.file_id] = f
        return f

    def mark_gone(self, f: FileRow, why: str = "source file gone") -> None:
        when = now_iso()
        with self.store.transaction():
            self.store.mark_gone(f.file_id, when)
        f.gone_at = when  # only once committed, so a failed write is retried
        if self.live.get(f.path) is f:
            del self.live[f.path]
        log.info("%s, rows kept: %s", why, f.path)

    def moved_out_of_sight(self, src: str, dest: str) -> None:
        """A rename to a name that is not a transcript's (``x.jsonl.bak``) takes the checkpoint along, so
        the file is the same one when it comes back."""
        f = self.live.get(src)
        if f is None or dest in self.live:
            return
        try:
            st = os.stat(dest, follow_symlinks=False)
        except OSError:
            return
        if (st.st_dev, st.st_ino) == (f.dev, f.inode):
            self.rename(f, dest)

    def rename(self, f: FileRow, dest: str, displaced: FileRow | None = None) -> None:
        """``f``'s file is now at ``dest``: move the checkpoint (live again if it was gone) and its session.
        ``displaced``, the live checkpoint of ``dest`` whose file is not there any more, is marked gone
        in the same transaction (its file may turn up elsewhere and claim it back)."""
        root = self.tree.root_of(Path(dest))
        if root is None:
            return
        g = msgspec.structs.replace(f, path=dest, root=str(root), gone_at=None)
        if self.tree.is_transcript(dest):  # a move to x.jsonl.bak keeps its session until it comes back
            g.project, g.session_key, parent = describe(root, Path(dest))
            g.parent_session = parent or f.parent_session
        when = now_iso()
        with self.store.transaction():
            if displaced is not None:
                self.store.mark_gone(displaced.file_id, when)
            self.store.save_file(g, iso_mtime(g.mtime_ns))
            if (g.session_key, g.project) != (f.session_key, f.project):
                self.store.move_session(g.file_id, (f.session_key, f.project), (g.session_key, g.project))
        if displaced is not None:
            displaced.gone_at = when
            log.info("%s holds another file now; its checkpoint is gone, rows kept", dest)
        if self.live.get(f.path) is f:
            del self.live[f.path]
        if f.path != dest:
            log.info("renamed: %s -> %s (offset %d kept)", f.path, dest, f.offset)
        adopt(f, g)
        self.live[dest] = f

    def identify(self, path: str, fd: int, st: os.stat_result) -> FileRow | None:
        """The checkpoint this file continues, reset to offset 0 when it must be read again."""
        f = self.live.get(path)
        if f is None or (f.dev, f.inode) != (st.st_dev, st.st_ino):
            f = self.claim(path, fd, st, f) or f
        if f is None:
            root = self.tree.root_of(Path(path))
            if root is None:
                return None
            gone = self.store.gone_at_path(path)
            if gone is None:
                f = self.new(path, root, st)
                self.live[path] = f
                return f
            f = self.by_id[gone]  # a file at a gone checkpoint's path, not its own file: read again below
            self.rename(f, path)
            log.info("%s: reappeared", path)
        why = None
        if (f.dev, f.inode) != (st.st_dev, st.st_ino):
            why = "replaced (new inode)"
        elif st.st_size < f.offset or st.st_size < f.size:
            why = f"truncated ({f.size} -> {st.st_size} bytes)"
        elif not reader.head_matches(fd, f.head_len, f.head_hash):
            why = "replaced (new head)"
        elif f.offset and reader.tail(fd, f.offset) != f.tail_hash:
            why = "rewritten before the checkpoint"
        elif reader.after_unterminated(fd, f.offset) not in (None, b"", b"\n"):
            why = "its final line, stored without a newline, went on"
        if why:
            log.info("%s: %s; reading it again from the start", path, why)
            f.generation += 1
            f.offset = 0
            f.size, f.mtime_ns = 0, -1
            f.dev, f.inode = st.st_dev, st.st_ino
            f.head_len, f.head_hash, f.tail_hash = 0, None, None
        return f

    def claim_at(self, path: str) -> None:
        """Let the file at ``path`` claim its checkpoint if it is another path's (see ``claim``)."""
        try:
            fd = os.open(path, OPEN_FLAGS)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            f = self.live.get(path)
            if stat.S_ISREG(st.st_mode) and (f is None or (f.dev, f.inode) != (st.st_dev, st.st_ino)):
                self.claim(path, fd, st, f)
        finally:
            os.close(fd)

    def claim(self, path: str, fd: int, st: os.stat_result, here: FileRow | None) -> FileRow | None:
        """The checkpoint, live or gone, whose file ``path`` now holds, moved to ``path``; ``here`` (the
        checkpoint of ``path``, on another inode) is displaced.

        Its file: the same (dev, inode) and the same first bytes (head hash), and its own path no longer
        holds that inode (else this is a hard link: two files). Nothing else about the past matters, so
        chains of renames faster than csmd, swaps and rotations all end with each checkpoint on its file.
        A gone checkpoint qualifies too: it was marked gone because its path was empty when csmd looked.
        Inode reuse is safe: the claimed checkpoint is then checked like any other, and bytes before its
        offset that differ (the tail hash) make it read again from 0, re-attaching only identical lines.
        """
        for file_id in self.store.with_inode(st.st_dev, st.st_ino):
            f = self.by_id.get(file_id)
            if f is None or f is here or not f.head_len or (f.path != path and _holds(f)):
                continue
            if reader.head_matches(fd, f.head_len, f.head_hash):
                self.rename(f, path, displaced=here)
                return f
        return None


def adopt(f: FileRow, g: FileRow) -> None:
    """``f`` becomes ``g``, in place: the one object every part holds for that file stays current."""
    for name in FileRow.__struct_fields__:
        setattr(f, name, getattr(g, name))
