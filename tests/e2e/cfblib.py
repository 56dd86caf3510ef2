"""A compound-file (MS-CFB) writer and an MSI Authenticode digest, written
independently of hsmsign's C code, for building MSI fixtures and checking
signed output (authenticode.md §5).

The writer deliberately lays files out differently from hsmsign: sectors of
each stream are interleaved (chains are not contiguous), the FAT comes
first, the directory tree is a plain unbalanced binary search tree, and a
DIFAT is written when the FAT needs more than 109 sectors. Readers must
follow the chains to get the data right.

Reading uses python3-olefile (an independent reader).
"""
import hashlib
import random
import struct

import olefile

ENDOFCHAIN, FREESECT, FATSECT, DIFSECT = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD, 0xFFFFFFFC
NOSTREAM = 0xFFFFFFFF
MINI = 64
CUTOFF = 4096
DS_NAME = "\x05DigitalSignature"
DSE_NAME = "\x05MsiDigitalSignatureEx"


class Node:
    """A stream (data is bytes) or a storage (children is a list)."""

    def __init__(self, name, data=None, children=None, clsid=b"\0" * 16,
                 state=0, ctime=b"\0" * 8, mtime=b"\0" * 8):
        self.name, self.data, self.children = name, data, children
        self.clsid, self.state, self.ctime, self.mtime = clsid, state, ctime, mtime

    @property
    def is_storage(self):
        return self.children is not None

    def raw_name(self):
        return self.name.encode("utf-16-le") + b"\0\0"


def _tree_key(node):
    """MS-CFB order: length first, then upper-cased code units."""
    raw = node.name.encode("utf-16-le")
    units = struct.unpack("<%dH" % (len(raw) // 2), raw)
    return (len(units), [u - 0x20 if 0x61 <= u <= 0x7A else u for u in units])


def write(root_children, sector_size=512, root_clsid=b"\0" * 16, seed=1,
          root_state=0, root_mtime=b"\0" * 8):
    """Returns the bytes of a compound file holding root_children."""
    rng = random.Random(seed)
    ss = sector_size
    entries = []  # [node, left, right, child]

    def add_storage(children):
        ids = []
        for c in children:
            entries.append([c, NOSTREAM, NOSTREAM, NOSTREAM])
            ids.append(len(entries) - 1)
        # unbalanced BST in insertion order (children shuffled first)
        order = ids[:]
        rng.shuffle(order)
        root = NOSTREAM
        for i in order:
            if root == NOSTREAM:
                root = i
                continue
            cur = root
            while True:
                side = 1 if _tree_key(entries[i][0]) < _tree_key(entries[cur][0]) else 2
                if entries[cur][side] == NOSTREAM:
                    entries[cur][side] = i
                    break
                cur = entries[cur][side]
        for i in ids:
            if entries[i][0].is_storage:
                entries[i][3] = add_storage(entries[i][0].children)
        return root

    rootnode = Node("Root Entry", children=root_children, clsid=root_clsid,
                    state=root_state, mtime=root_mtime)
    entries.append([rootnode, NOSTREAM, NOSTREAM, NOSTREAM])
    entries[0][3] = add_storage(root_children)

    # mini stream
    mini = bytearray()
    minifat = []
    start = {}
    for i, (n, *_rest) in enumerate(entries):
        if n.is_storage or not n.data or len(n.data) >= CUTOFF:
            continue
        k = (len(n.data) + MINI - 1) // MINI
        first = len(minifat)
        minifat += [first + j + 1 for j in range(k - 1)] + [ENDOFCHAIN]
        start[i] = first
        mini += n.data + b"\0" * (k * MINI - len(n.data))

    # regular-sector payloads: big streams, mini stream, directory, miniFAT
    payloads = []  # (key, bytes)
    for i, (n, *_rest) in enumerate(entries):
        if not n.is_storage and n.data and len(n.data) >= CUTOFF:
            payloads.append((("stream", i), n.data))
    if mini:
        payloads.append((("mini",), bytes(mini)))
    dir_bytes = len(entries) * 128
    payloads.append((("dir",), b"\0" * dir_bytes))  # filled in later
    if minifat:
        payloads.append((("minifat",), struct.pack("<%dI" % len(minifat), *minifat)))
    counts = {key: (len(b) + ss - 1) // ss for key, b in payloads}
    n_data = sum(counts.values())
    per = ss // 4
    n_fat = n_difat = 0
    while True:
        total = n_data + n_fat + n_difat
        f = (total + per - 1) // per
        d = 0 if f <= 109 else (f - 109 + per - 2) // (per - 1)
        if (f, d) == (n_fat, n_difat):
            break
        n_fat, n_difat = f, d
    # FAT sectors first, then DIFAT, then the data sectors interleaved
    fat_secs = list(range(n_fat))
    difat_secs = list(range(n_fat, n_fat + n_difat))
    slots = list(range(n_fat + n_difat, n_fat + n_difat + n_data))
    queue = [key for key, _ in payloads for _ in range(counts[key])]
    rng.shuffle(queue)
    chains = {key: [] for key, _ in payloads}
    for slot, key in zip(slots, queue):
        chains[key].append(slot)
    fat = [FREESECT] * (n_fat * per)
    for s in fat_secs:
        fat[s] = FATSECT
    for s in difat_secs:
        fat[s] = DIFSECT
    for key, chain in chains.items():
        for a, b in zip(chain, chain[1:] + [ENDOFCHAIN]):
            fat[a] = b
    for key, chain in chains.items():
        if key[0] == "stream":
            start[key[1]] = chain[0]

    def dirent(i):
        n, left, right, child = entries[i]
        raw = n.raw_name()
        typ = 5 if i == 0 else (1 if n.is_storage else 2)
        if i == 0:
            st, size = (chains[("mini",)][0] if mini else ENDOFCHAIN), len(mini)
        elif n.is_storage:
            st, size = 0, 0
        else:
            size = len(n.data or b"")
            st = start.get(i, ENDOFCHAIN)
        return (raw.ljust(64, b"\0") + struct.pack("<HBB3I", len(raw), typ, 1, left, right, child)
                + n.clsid + struct.pack("<I", n.state) + n.ctime + n.mtime
                + struct.pack("<IQ", st, size))

    directory = b"".join(dirent(i) for i in range(len(entries)))
    pad = (-len(directory)) % ss
    directory += (b"\0" * 64 + struct.pack("<HBB3I", 0, 0, 0, NOSTREAM, NOSTREAM, NOSTREAM)
                  + b"\0" * 52) * (pad // 128)
    data = dict(payloads)
    data[("dir",)] = directory
    out = {}
    for key, chain in chains.items():
        b = data[key]
        for j, s in enumerate(chain):
            out[s] = b[j * ss:(j + 1) * ss].ljust(ss, b"\0")
    for j, s in enumerate(fat_secs):
        out[s] = struct.pack("<%dI" % per, *fat[j * per:(j + 1) * per])
    extra = [s for s in fat_secs[109:]]
    for j, s in enumerate(difat_secs):
        part = extra[j * (per - 1):(j + 1) * (per - 1)]
        part += [FREESECT] * (per - 1 - len(part))
        nxt = difat_secs[j + 1] if j + 1 < len(difat_secs) else ENDOFCHAIN
        out[s] = struct.pack("<%dI" % per, *part, nxt)
    hdr_difat = fat_secs[:109] + [FREESECT] * (109 - min(109, n_fat))
    header = struct.pack(
        "<8s16sHHHHH6sIIIIIIIII109I", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"\0" * 16,
        0x3E, 3 if ss == 512 else 4, 0xFFFE, 9 if ss == 512 else 12, 6, b"\0" * 6,
        0 if ss == 512 else len(chains[("dir",)]), n_fat, chains[("dir",)][0], 0, CUTOFF,
        chains[("minifat",)][0] if minifat else ENDOFCHAIN,
        len(chains[("minifat",)]) if minifat else 0,
        difat_secs[0] if difat_secs else ENDOFCHAIN, n_difat, *hdr_difat)
    header = header.ljust(ss, b"\0")
    return header + b"".join(out[s] for s in range(n_fat + n_difat + n_data))


# ----------------------------------------------------------------- reading

def read_tree(path_or_bytes):
    """The file as a Node tree (root first), read with olefile."""
    ole = olefile.OleFileIO(path_or_bytes)
    try:
        def conv(d):
            if d.entry_type in (olefile.STGTY_STORAGE, olefile.STGTY_ROOT):
                kids = [conv(k) for k in d.kids]
                return Node(d.name, children=kids, clsid=_clsid_bytes(d), state=d.dwUserFlags,
                            ctime=struct.pack("<Q", d.createTime),
                            mtime=struct.pack("<Q", d.modifyTime))
            data = ole._open(d.isectStart, d.size).read() if d.size else b""
            return Node(d.name, data=data, state=d.dwUserFlags,
                        ctime=struct.pack("<Q", d.createTime),
                        mtime=struct.pack("<Q", d.modifyTime))
        return conv(ole.root)
    finally:
        ole.close()


def _clsid_bytes(d):
    return d.clsid_raw if hasattr(d, "clsid_raw") else _clsid_from_text(d.clsid)


def _clsid_from_text(text):
    if not text:
        return b"\0" * 16
    import uuid
    return uuid.UUID(text).bytes_le


def _hash_key(node):
    return node.raw_name()


def msi_digest(root, digest="sha256", dse=None):
    """Authenticode content digest of an MSI tree (authenticode.md §5.3):
    streams by raw UTF-16LE name incl. NUL (bytewise), storages recursed,
    CLSID after the children; signature streams skipped at the root. With
    dse (bytes), that value is hashed first (§5.4)."""
    h = hashlib.new(digest)
    if dse is not None:
        h.update(dse)

    def walk(s, top):
        for c in sorted(s.children, key=_hash_key):
            if top and c.name in (DS_NAME, DSE_NAME):
                continue
            if c.is_storage:
                walk(c, False)
            else:
                h.update(c.data)
        h.update(s.clsid)
    walk(root, True)
    return h.hexdigest()


def msi_prehash(root, digest="sha256"):
    """MsiDigitalSignatureEx value (§5.4) as bytes."""
    h = hashlib.new(digest)

    def meta(n, kind):
        if kind != "root":
            h.update(n.raw_name()[:-2])
        if kind == "stream":
            h.update(struct.pack("<I", len(n.data) & 0xFFFFFFFF))
        else:
            h.update(n.clsid)
        h.update(struct.pack("<I", n.state))
        if kind != "root":
            h.update(n.ctime + n.mtime)

    def walk(s, top):
        meta(s, "root" if top else "storage")
        for c in sorted(s.children, key=_hash_key):
            if top and c.name in (DS_NAME, DSE_NAME):
                continue
            if c.is_storage:
                walk(c, False)
            else:
                meta(c, "stream")
    walk(root, True)
    return h.digest()


def find(root, name):
    for c in root.children:
        if c.name == name:
            return c
    return None
