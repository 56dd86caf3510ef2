"""Builds APPX/MSIX packages and bundles without makeappx (Windows only).

A package is a ZIP whose AppxBlockMap.xml lists, for every file but itself
and [Content_Types].xml, the size of its local file header (LfhSize) and one
hash per 64 KiB block of uncompressed data (with the block's compressed size
when deflated: makeappx deflates every block separately, Z_FULL_FLUSH).
[Content_Types].xml comes last, as makeappx writes it. The ZIP writer is
ours so that fixtures can have zip64 end records, data descriptors and zip64
extra fields exactly like packages from makeappx.

Also used by scripts/gen-package-fixtures; stdlib only.
"""
import base64
import hashlib
import struct
import zlib

BLOCK = 65536
HASH_URIS = {
    "sha256": "http://www.w3.org/2001/04/xmlenc#sha256",
    "sha384": "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "sha512": "http://www.w3.org/2001/04/xmlenc#sha512",
}
DOS_TIME, DOS_DATE = 0x6000, 0x5821  # 2024-01-01 12:00:00, fixed


def deflate_blocks(data):
    """Raw deflate, one full flush per 64 KiB block: (stream, block sizes)."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    out, sizes = b"", []
    for i in range(0, max(len(data), 1), BLOCK):
        chunk = co.compress(data[i:i + BLOCK])
        last = i + BLOCK >= len(data)
        chunk += co.flush(zlib.Z_FINISH if last else zlib.Z_FULL_FLUSH)
        out += chunk
        sizes.append(len(chunk))
    return out, sizes


class ZipWriter:
    """Writes local records in order and a central directory at the end."""

    def __init__(self, zip64=False, descriptors=False):
        self.zip64 = zip64
        self.descriptors = descriptors
        self.buf = bytearray()
        self.cd = []

    def add(self, name, data, compress=True, z64_offset=False):
        """Adds one entry; returns (local header size, block sizes|None)."""
        raw_name = name.encode()
        if compress:
            payload, sizes = deflate_blocks(data)
            method = 8
        else:
            payload, sizes, method = data, None, 0
        crc = zlib.crc32(data)
        flags = 8 if self.descriptors else 0
        off = len(self.buf)
        hdr_crc, hdr_cs, hdr_us = ((0, 0, 0) if self.descriptors
                                   else (crc, len(payload), len(data)))
        lfh = struct.pack("<4sHHHHHIIIHH", b"PK\3\4", 45 if self.zip64 else 20,
                          flags, method, DOS_TIME, DOS_DATE, hdr_crc, hdr_cs,
                          hdr_us, len(raw_name), 0) + raw_name
        self.buf += lfh + payload
        if self.descriptors:
            fmt = "<4sIQQ" if self.zip64 else "<4sIII"
            self.buf += struct.pack(fmt, b"PK\7\x08", crc, len(payload),
                                    len(data))
        # All three values in the zip64 extra field: osslsigncode 2.9
        # rejects one that holds only the offset (it wants 24 bytes).
        extra = (struct.pack("<HHQQQ", 1, 24, len(data), len(payload), off)
                 if z64_offset else b"")
        big = 0xFFFFFFFF
        rec = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\1\2", 45, 45 if self.zip64
                          else 20, flags, method, DOS_TIME, DOS_DATE, crc,
                          big if z64_offset else len(payload),
                          big if z64_offset else len(data), len(raw_name),
                          len(extra), 0, 0, 0, 0, big if z64_offset else off)
        self.cd.append(rec + raw_name + extra)
        return len(lfh), sizes

    def finish(self):
        cd = b"".join(self.cd)
        cd_off, n = len(self.buf), len(self.cd)
        self.buf += cd
        if self.zip64:
            eocd64_off = len(self.buf)
            self.buf += struct.pack("<4sQHHIIQQQQ", b"PK\6\6", 44, 45, 45, 0, 0,
                                    n, n, len(cd), cd_off)
            self.buf += struct.pack("<4sIQI", b"PK\6\7", 0, eocd64_off, 1)
            # makeappx defers every field to the zip64 record.
            self.buf += struct.pack("<4sHHHHIIH", b"PK\5\6", 0, 0, 0xFFFF,
                                    0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
        else:
            self.buf += struct.pack("<4sHHHHIIH", b"PK\5\6", 0, 0, n, n,
                                    len(cd), cd_off, 0)
        return bytes(self.buf)


def manifest_xml(publisher, name="HsmSign.TestApp"):
    pub = (publisher.replace("&", "&amp;").replace('"', "&quot;")
           .replace("<", "&lt;"))
    return ('<?xml version="1.0" encoding="utf-8"?>\r\n'
            '<Package xmlns="http://schemas.microsoft.com/appx/manifest/foundation/windows10">\r\n'
            '  <Identity Name="%s" Publisher="%s" Version="1.0.0.0" '
            'ProcessorArchitecture="x64"/>\r\n'
            '  <Properties><DisplayName>hsmsign test</DisplayName>'
            '<PublisherDisplayName>hsmsign</PublisherDisplayName>'
            '<Logo>logo.png</Logo></Properties>\r\n'
            '</Package>\r\n' % (name, pub)).encode()


def bundle_manifest_xml(publisher, packages):
    items = "".join('    <Package Type="application" Version="1.0.0.0" '
                    'Architecture="x64" FileName="%s"/>\r\n' % p
                    for p in packages)
    return ('<?xml version="1.0" encoding="UTF-8"?>\r\n'
            '<Bundle xmlns="http://schemas.microsoft.com/appx/2013/bundle" '
            'SchemaVersion="1.0">\r\n'
            '  <Identity Name="HsmSign.TestBundle" Publisher="%s" '
            'Version="1.0.0.0"/>\r\n  <Packages>\r\n%s  </Packages>\r\n'
            '</Bundle>\r\n' % (publisher, items)).encode()


def content_types_xml(exts, overrides=()):
    parts = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">']
    for ext, ctype in exts:
        parts.append('<Default Extension="%s" ContentType="%s"/>' % (ext, ctype))
    for name, ctype in overrides:
        parts.append('<Override PartName="/%s" ContentType="%s"/>' % (name, ctype))
    parts.append("</Types>")
    return "".join(parts).encode()


def block_map_xml(files, hash_name):
    """files: [(name, data, lfh_size, block sizes or None)]."""
    out = ['<?xml version="1.0" encoding="UTF-8" standalone="no"?>\r\n',
           '<BlockMap xmlns="http://schemas.microsoft.com/appx/2010/blockmap" '
           'HashMethod="%s">' % HASH_URIS[hash_name]]
    for name, data, lfh, sizes in files:
        out.append('<File Name="%s" Size="%d" LfhSize="%d">'
                   % (name.replace("/", "\\"), len(data), lfh))
        for i, start in enumerate(range(0, len(data), BLOCK)):
            h = base64.b64encode(hashlib.new(hash_name, data[start:start + BLOCK])
                                 .digest()).decode()
            size = ' Size="%d"' % sizes[i] if sizes else ""
            out.append('<Block Hash="%s"%s/>' % (h, size))
        out.append("</File>")
    out.append("</BlockMap>")
    return "".join(out).encode()


CT_DEFAULTS = [("png", "image/png"), ("exe", "application/x-msdownload"),
               ("dll", "application/x-msdownload"),
               ("txt", "text/plain"), ("cat", "application/vnd.ms-pki.seccat"),
               ("appx", "application/vnd.ms-appx"),
               ("xml", "application/vnd.ms-appx.manifest+xml")]
CT_BLOCKMAP = ("AppxBlockMap.xml", "application/vnd.ms-appx.blockmap+xml")
CT_BUNDLE = ("AppxMetadata/AppxBundleManifest.xml",
             "application/vnd.ms-appx.bundlemanifest+xml")


def build(files, hash_name="sha256", zip64=False, descriptors=False,
          ct_last=True, z64_offset_names=(), bundle=False):
    """files: [(name, data, compress)] in order, manifest included.
    Returns the package bytes."""
    zw = ZipWriter(zip64=zip64, descriptors=descriptors)
    overrides = [CT_BLOCKMAP] + ([CT_BUNDLE] if bundle else [])
    ct = content_types_xml(CT_DEFAULTS, overrides)
    listed = []
    if not ct_last:
        zw.add("[Content_Types].xml", ct)
    for name, data, compress in files:
        lfh, sizes = zw.add(name, data, compress, name in z64_offset_names)
        listed.append((name, data, lfh, sizes))
    zw.add("AppxBlockMap.xml", block_map_xml(listed, hash_name))
    if ct_last:
        zw.add("[Content_Types].xml", ct)
    return zw.finish()
