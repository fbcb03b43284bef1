"""Outlook .msg files written by the tests: a small Compound File Binary (MS-CFB, version 3) writer
and the Outlook Item Message layout (MS-OXMSG) on top of it: subject, sender, body, HTML body,
recipients and attachments as Outlook stores them. No library writes .msg files; readers
(olefile, python-oxmsg) take what this writes as Outlook's own."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

_SECTOR = 512
_MINI = 64
_CUTOFF = 4096
_FREE, _END, _FAT = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD
_NONE = 0xFFFFFFFF

PT_LONG, PT_UNICODE, PT_BINARY = 0x0003, 0x001F, 0x0102


@dataclass
class Entry:
    name: str
    kind: int  # 1 storage, 2 stream, 5 root
    data: bytes = b""
    children: list[Entry] = field(default_factory=list)
    start: int = _END
    left: int = _NONE
    right: int = _NONE
    child: int = _NONE


def _chain(fat: list[int], first: int, count: int) -> None:
    for i in range(count):
        fat[first + i] = first + i + 1 if i + 1 < count else _END


def _key(entry: Entry) -> tuple[int, str]:
    return (len(entry.name), entry.name.upper())  # MS-CFB's order: length first


def _flatten(root: Entry) -> list[Entry]:
    """Directory order, with each storage's children as a balanced tree of siblings."""
    entries = [root]

    def place(storage: Entry) -> None:
        kids = sorted(storage.children, key=_key)
        ids = list(range(len(entries), len(entries) + len(kids)))
        entries.extend(kids)

        def tree(lo: int, hi: int) -> int:
            if lo >= hi:
                return _NONE
            mid = (lo + hi) // 2
            kids[mid].left, kids[mid].right = tree(lo, mid), tree(mid + 1, hi)
            return ids[mid]

        storage.child = tree(0, len(kids))
        for kid in kids:
            if kid.kind == 1:
                place(kid)

    place(root)
    return entries


def write_cfb(path: Path, root_children: list[Entry]) -> Path:
    root = Entry("Root Entry", 5, children=root_children)
    entries = _flatten(root)
    mini = bytearray()
    big: list[bytes] = []
    for entry in entries:
        if entry.kind != 2:
            continue
        if len(entry.data) < _CUTOFF:
            entry.start = len(mini) // _MINI if entry.data else _END
            mini += entry.data + b"\0" * (-len(entry.data) % _MINI)
        else:
            big.append(entry.data)
    mini_fat: list[int] = []
    for entry in entries:
        if entry.kind == 2 and len(entry.data) < _CUTOFF and entry.data:
            count = -(-len(entry.data) // _MINI)
            first = len(mini_fat)
            mini_fat.extend([0] * count)
            _chain(mini_fat, first, count)
    mini_fat += [_FREE] * (-len(mini_fat) % (_SECTOR // 4))
    n_dir = -(-len(entries) // 4)
    n_minifat = len(mini_fat) * 4 // _SECTOR
    n_mini = -(-len(mini) // _SECTOR)
    big_sectors = [-(-len(b) // _SECTOR) for b in big]
    others = n_dir + n_minifat + n_mini + sum(big_sectors)
    n_fat = 1
    while n_fat * (_SECTOR // 4) < n_fat + others:
        n_fat += 1
    fat = [_FREE] * (n_fat * _SECTOR // 4)
    for i in range(n_fat):
        fat[i] = _FAT
    dir_start = n_fat
    _chain(fat, dir_start, n_dir)
    minifat_start = dir_start + n_dir
    _chain(fat, minifat_start, n_minifat)
    mini_start = minifat_start + n_minifat
    _chain(fat, mini_start, n_mini)
    root.start, root.data = (mini_start if mini else _END), bytes(mini)
    sector = mini_start + n_mini
    streams = iter(e for e in entries if e.kind == 2 and len(e.data) >= _CUTOFF)
    for count in big_sectors:
        entry = next(streams)
        entry.start = sector
        _chain(fat, sector, count)
        sector += count
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII",
        bytes.fromhex("D0CF11E0A1B11AE1"),
        b"\0" * 16,
        0x3E,
        3,
        0xFFFE,
        9,
        6,
        b"\0" * 6,
        0,
        n_fat,
        dir_start,
        0,
        _CUTOFF,
        minifat_start if n_minifat else _END,
        n_minifat,
        _END,
        0,
    )
    difat = list(range(n_fat)) + [_FREE] * (109 - n_fat)
    out = bytearray(header + struct.pack("<109I", *difat))
    out += struct.pack(f"<{len(fat)}I", *fat)
    directory = bytearray()
    for entry in entries:
        name = entry.name.encode("utf-16-le") + b"\0\0"
        directory += struct.pack(
            "<64sHBBIII16sIQQIQ",
            name,
            len(name),
            entry.kind,
            1,
            entry.left,
            entry.right,
            entry.child,
            b"\0" * 16,
            0,
            0,
            0,
            0 if entry.kind == 1 else entry.start,
            len(entry.data),
        )
    empty = struct.pack("<64sHBBIII16sIQQIQ", b"", 0, 0, 0, _NONE, _NONE, _NONE, b"", 0, 0, 0, 0, 0)
    directory += empty * (n_dir * 4 - len(entries))
    out += directory
    out += struct.pack(f"<{len(mini_fat)}I", *mini_fat)
    out += bytes(mini) + b"\0" * (n_mini * _SECTOR - len(mini))
    for data in big:
        out += data + b"\0" * (-len(data) % _SECTOR)
    path.write_bytes(bytes(out))
    return path


def _properties(values: dict[tuple[int, int], str | bytes | int], header: bytes) -> list[Entry]:
    """The __properties_version1.0 stream and a __substg1.0_ stream per variable-length value."""
    table = bytearray(header)
    streams = []
    for (pid, ptype), value in sorted(values.items()):
        tag = (pid << 16) | ptype
        if isinstance(value, int):
            table += struct.pack("<IIiI", tag, 6, value, 0)
            continue
        data = value.encode("utf-16-le") if isinstance(value, str) else value
        size = len(data) + (2 if isinstance(value, str) else 0)
        table += struct.pack("<IIII", tag, 6, size, 0)
        streams.append(Entry(f"__substg1.0_{pid:04X}{ptype:04X}", 2, data))
    return [Entry("__properties_version1.0", 2, bytes(table)), *streams]


def write_msg(
    path: Path,
    *,
    subject: str,
    sender: str,
    to: list[str],
    body: str | None = None,
    html: str | None = None,
    attachments: dict[str, bytes] | None = None,
) -> Path:
    """An Outlook e-mail (IPM.Note) with Unicode string properties, as Outlook 2007+ saves it."""
    values: dict[tuple[int, int], str | bytes | int] = {
        (0x001A, PT_UNICODE): "IPM.Note",
        (0x0037, PT_UNICODE): subject,
        (0x0C1A, PT_UNICODE): sender.split("<")[0].strip().strip('"'),
        (0x0C1F, PT_UNICODE): sender.split("<")[-1].rstrip(">"),
        (0x0E04, PT_UNICODE): "; ".join(to),
        (0x340D, PT_LONG): 0x00040000,  # PidTagStoreSupportMask: STORE_UNICODE_OK
        (0x3FDE, PT_LONG): 65001,  # PidTagInternetCodepage: the HTML body is UTF-8
    }
    if body is not None:
        values[(0x1000, PT_UNICODE)] = body
    if html is not None:
        values[(0x1013, PT_BINARY)] = html.encode("utf-8")
    attachments = attachments or {}
    header = struct.pack("<8xIIII8x", len(to), len(attachments), len(to), len(attachments))
    children = _properties(values, header)
    for i, address in enumerate(to):
        recipient = {
            (0x3001, PT_UNICODE): address,
            (0x3003, PT_UNICODE): address,
            (0x39FE, PT_UNICODE): address,
            (0x0C15, PT_LONG): 1,  # MAPI_TO
        }
        storage = Entry(f"__recip_version1.0_#{i:08X}", 1)
        storage.children = _properties(recipient, b"\0" * 8)
        children.append(storage)
    for i, (name, data) in enumerate(attachments.items()):
        attachment = {
            (0x3001, PT_UNICODE): name,
            (0x3704, PT_UNICODE): name,
            (0x3707, PT_UNICODE): name,
            (0x3701, PT_BINARY): data,
            (0x3705, PT_LONG): 1,  # ATTACH_BY_VALUE
        }
        storage = Entry(f"__attach_version1.0_#{i:08X}", 1)
        storage.children = _properties(attachment, b"\0" * 8)
        children.append(storage)
    return write_cfb(path, children)
