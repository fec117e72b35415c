"""The packed Hugging Face BitNet checkpoint format (DESIGN.md, docs/formats.md), written and read
without the `safetensors` package so that the exporter and the reference share no code with
bitserve or with each other's library versions.

Ternary packing (transformers' pack_weights): T [out, in] in {-1,0,1}, rows4 = out / 4,
P[r, i] (U8) bits 2k..2k+1 = T[k * rows4 + r, i] + 1.
"""
import json
import struct

import numpy as np
import torch

DTYPES = {"U8": (np.uint8, 1), "BF16": (np.uint16, 2), "F32": (np.float32, 4), "F16": (np.float16, 2)}


def pack_ternary(t):
    t = t.to(torch.int64)
    out, inp = t.shape
    assert out % 4 == 0
    q = (t + 1).view(4, out // 4, inp)
    packed = q[0] | (q[1] << 2) | (q[2] << 4) | (q[3] << 6)
    return packed.to(torch.uint8)


def unpack_ternary(p):
    p = p.to(torch.int64)
    parts = [((p >> (2 * k)) & 3) - 1 for k in range(4)]
    assert all(int(x.max()) <= 1 for x in parts), "code 3 in a packed ternary tensor"
    return torch.cat(parts, dim=0).to(torch.int8)


def bf16_bits(t):
    return t.detach().float().cpu().to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def bits_to_float(bits):
    """bf16 bit patterns (uint16 numpy) -> float32 torch tensor, exactly."""
    return torch.from_numpy((bits.astype(np.uint32) << 16).view(np.float32).copy())


def write_safetensors(path, tensors):
    """tensors: list of (name, dtype string, numpy array)."""
    header, offset, blobs = {}, 0, []
    for name, dtype, arr in tensors:
        data = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """name -> numpy array (BF16 as uint16 bit patterns)."""
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        np_dtype, _ = DTYPES[info["dtype"]]
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(raw[base + a:base + b], dtype=np_dtype).reshape(info["shape"])
    return out
