"""An independent reader of the .peftpack format, written from spec/FORMAT.md alone.

    pack = Pack("adapter.peftpack")
    pack.document                 # the adapter document (dict)
    pack.names()                  # tensor names in index order
    pack.array("default/…/A")     # numpy array (BF16 comes back as uint16 bit patterns)
    pack.verify()                 # decodes every chunk, checks every checksum

Needs numpy, zstandard and xxhash. Every check of FORMAT.md §8 is made; failures raise PackError.
"""
import json
import struct

import numpy as np
import xxhash
import zstandard

MAGIC = b"\x89PEFTPK\n"
MAJOR = 1
PREAMBLE = 64
MAX_HEADER_STORED = 64 << 20
MAX_HEADER_RAW = 256 << 20
MAX_CHUNK = 64 << 20
MAX_RATIO = 65536
DTYPES = {"F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2), "I64": ("<i8", 8),
          "I32": ("<i4", 4), "I16": ("<i2", 2), "I8": ("i1", 1), "U64": ("<u8", 8), "U32": ("<u4", 4),
          "U16": ("<u2", 2), "U8": ("u1", 1), "BOOL": ("?", 1)}
PLANES = {"BF16": 2, "F16": 2, "F32": 4}


class PackError(Exception):
    pass


def xxh3(data) -> int:
    return xxhash.xxh3_64_intdigest(data)


def _no_duplicates(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise PackError(f"duplicate JSON key {key!r}")
        result[key] = value
    return result


def _hex(value, what):
    if not isinstance(value, str) or len(value) != 16:
        raise PackError(f"{what} is not 16 hex digits")
    return int(value, 16)


def _int(value, what, low=0, high=None):
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        raise PackError(f"{what} out of range: {value!r}")
    return value


def _zstd_exact(frame: bytes, size: int, what: str) -> bytes:
    params = zstandard.get_frame_parameters(frame)
    if params.content_size != size:
        raise PackError(f"{what}: frame declares {params.content_size} bytes, expected {size}")
    try:
        out = zstandard.ZstdDecompressor().decompress(frame, max_output_size=size)
    except zstandard.ZstdError as error:
        raise PackError(f"{what}: {error}")
    if len(out) != size:
        raise PackError(f"{what}: decoded {len(out)} bytes, expected {size}")
    if zstandard.frame_content_size(frame) != size:
        raise PackError(f"{what}: bad frame")
    return out


def merge_planes(dtype: str, planes: list, count: int) -> bytes:
    p = [np.frombuffer(plane, dtype=np.uint8).astype(np.uint32) for plane in planes]
    if dtype == "BF16":
        x = ((p[1] & 0x80) << 8) | (p[0] << 7) | (p[1] & 0x7F)
        return x.astype("<u2").tobytes()
    if dtype == "F16":
        return ((p[0] << 8) | p[1]).astype("<u2").tobytes()
    if dtype == "F32":
        x = ((p[1] & 0x80) << 24) | (p[0] << 23) | ((p[1] & 0x7F) << 16) | (p[2] << 8) | p[3]
        return x.astype("<u4").tobytes()
    raise PackError(f"no plane transform for {dtype}")


class Pack:
    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as handle:
            self.data = handle.read()
        data = self.data
        if len(data) < PREAMBLE or data[:8] != MAGIC:
            raise PackError("not a .peftpack file")
        if xxh3(data[:56]) != struct.unpack_from("<Q", data, 56)[0]:
            raise PackError("preamble checksum mismatch")
        self.major, self.minor = struct.unpack_from("<HH", data, 8)
        if self.major != MAJOR:
            raise PackError(f"pack format {self.major}.{self.minor} is not readable (reads {MAJOR}.x)")
        offset, stored, raw, header_hash = struct.unpack_from("<QQQQ", data, 16)
        if stored > MAX_HEADER_STORED or raw > MAX_HEADER_RAW or raw > stored * MAX_RATIO:
            raise PackError("header larger than the limits")
        if offset < PREAMBLE or offset + stored != len(data):
            raise PackError("header does not end the file")
        frame = data[offset:]
        if xxh3(frame) != header_hash:
            raise PackError("header checksum mismatch")
        text = _zstd_exact(frame, raw, "header")
        try:
            header = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PackError(f"header is not JSON: {error}")
        if not isinstance(header, dict) or not isinstance(header.get("document"), dict) or not isinstance(header.get("tensors"), list):
            raise PackError("header lacks document or tensors")
        self.document = header["document"]
        self.entries = {}
        data_end = PREAMBLE
        for entry in header["tensors"]:
            name = entry.get("name")
            if not isinstance(name, str) or not name or name in self.entries:
                raise PackError(f"bad or repeated tensor name {name!r}")
            dtype = entry.get("dtype")
            if dtype not in DTYPES:
                raise PackError(f"{name}: unknown dtype {dtype!r}")
            shape = [_int(d, f"{name}: dimension") for d in entry.get("shape", None) or []] if isinstance(entry.get("shape"), list) else None
            if shape is None:
                raise PackError(f"{name}: no shape")
            size = DTYPES[dtype][1]
            for d in shape:
                size *= d
            if size >= 1 << 63:
                raise PackError(f"{name}: shape overflows")
            total = 0
            for number, chunk in enumerate(entry.get("chunks", [])):
                what = f"{name} chunk {number}"
                chunk_offset = _int(chunk.get("offset"), f"{what} offset")
                raw_length = _int(chunk.get("raw_length"), f"{what} raw_length", 1, MAX_CHUNK)
                stored_length = _int(chunk.get("stored_length"), f"{what} stored_length", 1)
                if raw_length % DTYPES[dtype][1] or raw_length > stored_length * MAX_RATIO:
                    raise PackError(f"{what}: raw_length invalid")
                transform = chunk.get("transform")
                planes = chunk.get("planes")
                expected = 1 if transform == "none" else PLANES.get(dtype) if transform == "planes" else None
                if expected is None or not isinstance(planes, list) or len(planes) != expected:
                    raise PackError(f"{what}: bad transform or plane count")
                if any(p.get("codec") not in ("raw", "zstd") for p in planes):
                    raise PackError(f"{what}: unknown codec")
                if sum(_int(p.get("stored_length"), f"{what} plane") for p in planes) != stored_length:
                    raise PackError(f"{what}: plane lengths do not add up")
                if chunk_offset % 64 or chunk_offset < data_end or chunk_offset + stored_length > offset:
                    raise PackError(f"{what}: misplaced")
                _hex(chunk.get("raw_xxh3"), f"{what} raw_xxh3")
                _hex(chunk.get("stored_xxh3"), f"{what} stored_xxh3")
                data_end = chunk_offset + stored_length
                total += raw_length
            if total != size:
                raise PackError(f"{name}: chunks hold {total} bytes, shape needs {size}")
            self.entries[name] = {"dtype": dtype, "shape": shape, "chunks": entry.get("chunks", [])}

    def names(self):
        return list(self.entries)

    def read(self, name: str) -> bytes:
        entry = self.entries[name]
        out = bytearray()
        for number, chunk in enumerate(entry["chunks"]):
            what = f"{name} chunk {number}"
            start, length = chunk["offset"], chunk["stored_length"]
            stored = self.data[start:start + length]
            if xxh3(stored) != _hex(chunk["stored_xxh3"], what):
                raise PackError(f"{what}: stored checksum mismatch")
            count = len(chunk["planes"])
            plane_length = chunk["raw_length"] // count
            planes, position = [], 0
            for plane in chunk["planes"]:
                body = stored[position:position + plane["stored_length"]]
                position += plane["stored_length"]
                if plane["codec"] == "raw":
                    if len(body) != plane_length:
                        raise PackError(f"{what}: raw plane has the wrong length")
                    planes.append(body)
                else:
                    planes.append(_zstd_exact(body, plane_length, what))
            raw = planes[0] if chunk["transform"] == "none" else merge_planes(entry["dtype"], planes, plane_length)
            if xxh3(raw) != _hex(chunk["raw_xxh3"], what):
                raise PackError(f"{what}: decoded checksum mismatch")
            out += raw
        return bytes(out)

    def array(self, name: str) -> np.ndarray:
        entry = self.entries[name]
        return np.frombuffer(self.read(name), dtype=DTYPES[entry["dtype"]][0]).reshape(entry["shape"])

    def verify(self):
        for name in self.entries:
            self.read(name)
